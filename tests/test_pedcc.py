"""PEDCC geometry: unit vectors, exact simplex cosine, repulsion spread, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from icbpl.core.pedcc import make_pedcc, pedcc_info


@pytest.mark.parametrize(("k", "d"), [(2, 2), (3, 2), (10, 100), (10, 9), (50, 60)])
def test_simplex_is_exact(k: int, d: int) -> None:
    pts = make_pedcc(k, d, seed=1)
    assert pts.shape == (k, d)
    np.testing.assert_allclose(np.linalg.norm(pts, axis=1), 1.0, atol=1e-12)
    gram = pts @ pts.T
    off = gram[~np.eye(k, dtype=bool)]
    np.testing.assert_allclose(off, -1.0 / (k - 1), atol=1e-6)
    assert pedcc_info(pts).exact_simplex


def test_hand_computed_triangle() -> None:
    # three points on a circle: 120 degrees apart, cosine -1/2
    pts = make_pedcc(3, 2, seed=0)
    angles = np.degrees(np.arccos(np.clip(pts @ pts.T, -1, 1)))
    np.testing.assert_allclose(angles[~np.eye(3, dtype=bool)], 120.0, atol=1e-6)


def test_seed_rotates_but_is_deterministic() -> None:
    a, b, c = make_pedcc(10, 32, seed=0), make_pedcc(10, 32, seed=0), make_pedcc(10, 32, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_repulsion_above_simplex_limit() -> None:
    # 6 points on the 2-sphere: the optimum is the octahedron (minimum angle 90 degrees)
    pts = make_pedcc(6, 3, seed=0)
    info = pedcc_info(pts)
    assert not info.exact_simplex
    np.testing.assert_allclose(np.linalg.norm(pts, axis=1), 1.0, atol=1e-9)
    assert info.min_angle_degrees > 85.0
    # random points do much worse on average, so the iteration did spread them
    rng = np.random.default_rng(0)
    r = rng.standard_normal((6, 3))
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    assert info.min_angle_degrees > pedcc_info(r).min_angle_degrees


def test_cache_is_not_exposed() -> None:
    a = make_pedcc(4, 8)
    a[:] = 0
    assert np.abs(make_pedcc(4, 8)).sum() > 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_points=1 should be >= 2"):
        make_pedcc(1, 8)
    with pytest.raises(ValueError, match="dim=1"):
        make_pedcc(3, 1)
