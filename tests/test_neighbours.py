"""Tests for kNN mining: against a brute-force numpy reference, self-exclusion, duplicates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icbpl.core.neighbours import mine_neighbours, recall
from icbpl.core.selection import neighbour_agreement


def _reference(x: np.ndarray, k: int) -> np.ndarray:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = []
    for i in range(len(x)):
        sims = [(float(xn[i] @ xn[j]), j) for j in range(len(x)) if j != i]
        sims.sort(key=lambda t: (-t[0], t[1]))
        out.append([j for _, j in sims[:k]])
    return np.array(out)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_matches_bruteforce(backend: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    got = mine_neighbours(x, 5, backend=backend, block_size=16)
    ref = _reference(x, 5)
    assert got.shape == (60, 5)
    np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(ref, axis=1))


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_self_never_included_with_duplicates(backend: str) -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal((10, 4)).astype(np.float32)
    x = np.concatenate([base, base, base])  # every row has two exact duplicates
    got = mine_neighbours(x, 2, backend=backend)
    assert not (got == np.arange(30)[:, None]).any()
    # the two neighbours of each row are its two duplicates
    expected = np.tile((np.arange(30) % 10)[:, None], (1, 2))
    np.testing.assert_array_equal(got % 10, expected)


def test_accepts_tensor_and_bad_input() -> None:
    x = torch.randn(20, 3)
    assert mine_neighbours(x, 3).shape == (20, 3)
    with pytest.raises(ValueError, match="k=20"):
        mine_neighbours(x, 20)
    with pytest.raises(ValueError, match="2-D"):
        mine_neighbours(torch.randn(5), 1)


def test_neighbour_agreement_with_class_labels() -> None:
    nb = np.array([[1], [0], [3], [2]])
    assert neighbour_agreement(np.array([0, 0, 1, 0]), nb) == 0.5


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_progress_bar_counts_the_queries(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(2).standard_normal((50, 6)).astype(np.float32)
    quiet = mine_neighbours(x, 3, backend=backend, block_size=16)
    assert "neighbours" not in capsys.readouterr().err
    shown = mine_neighbours(x, 3, backend=backend, block_size=16, progress=True)
    assert "50/50" in capsys.readouterr().err
    np.testing.assert_array_equal(shown, quiet)


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Rows near 20 low-rank (4-dim) patches: neighbours that an index can find."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, d))
    basis = rng.standard_normal((20, 4, d)) * 0.5
    lab = rng.integers(0, 20, n)
    z = rng.standard_normal((n, 4))
    x = centres[lab] + np.einsum("nr,nrd->nd", z, basis[lab]) + 0.05 * rng.standard_normal((n, d))
    return x.astype(np.float32)


def test_ivf_recall_against_exact() -> None:
    x = _clustered(6000, 16)
    exact = mine_neighbours(x, 4, method="exact")
    approx = mine_neighbours(x, 4, method="ivf", block_size=1000)
    assert approx.shape == (6000, 4)
    assert not (approx == np.arange(6000)[:, None]).any()
    assert len(np.unique(np.sort(approx, axis=1), axis=1)[0]) == 4  # no repeated neighbour
    assert recall(approx, exact) >= 0.95
    assert recall(exact, exact) == 1.0


def test_ivf_survives_duplicates_and_few_rows_per_list() -> None:
    base = _clustered(400, 8, seed=3)
    x = np.concatenate([base, base, base])
    got = mine_neighbours(x, 2, method="ivf", block_size=128)
    assert not (got == np.arange(1200)[:, None]).any()
    np.testing.assert_array_equal(got % 400, np.tile((np.arange(1200) % 400)[:, None], (1, 2)))


def test_auto_method_follows_size() -> None:
    from icbpl.core.neighbours import EXACT_BUDGET, _resolve_method, ivf_params

    small = int((EXACT_BUDGET / 256) ** 0.5)
    assert _resolve_method("auto", small, 256) == "exact"
    assert _resolve_method("auto", 2 * small, 256) == "ivf"
    assert ivf_params(1_000_000) == (3906, 16)
    with pytest.raises(ValueError, match="method='nope'"):
        mine_neighbours(np.ones((5, 2), np.float32), 1, method="nope")


class _Tracked(np.ndarray):
    """An ndarray that records the largest number of rows any single index asked for."""

    largest = 0

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        out = super().__getitem__(key)
        if isinstance(out, np.ndarray) and out.ndim == 2:
            _Tracked.largest = max(_Tracked.largest, out.shape[0])
        return out


@pytest.mark.parametrize("method", ["exact", "ivf"])
def test_memmap_is_read_block_by_block(tmp_path, method: str) -> None:  # type: ignore[no-untyped-def]
    x = _clustered(3000, 8)
    path = tmp_path / "f.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    tracked = mm.view(_Tracked)
    _Tracked.largest = 0
    got = mine_neighbours(tracked, 3, method=method, block_size=500)
    assert 0 < _Tracked.largest <= 500
    np.testing.assert_array_equal(got, mine_neighbours(x, 3, method=method, block_size=500))


def test_ivf_on_a_memmap_allocates_far_less_than_the_features(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import tracemalloc

    x = _clustered(20000, 256)
    path = tmp_path / "f.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    del x
    tracemalloc.start()
    try:
        mine_neighbours(mm, 4, method="ivf", block_size=1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < mm.nbytes / 2, f"peak {peak} bytes for {mm.nbytes} bytes of features"
