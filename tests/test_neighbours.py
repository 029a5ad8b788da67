"""Tests for kNN mining: against a brute-force numpy reference, self-exclusion, duplicates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icbpl.neighbours import mine_neighbours, neighbour_accuracy


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


def test_neighbour_accuracy() -> None:
    nb = np.array([[1], [0], [3], [2]])
    assert neighbour_accuracy(nb, np.array([0, 0, 1, 0])) == 0.5


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_progress_bar_counts_the_queries(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(2).standard_normal((50, 6)).astype(np.float32)
    quiet = mine_neighbours(x, 3, backend=backend, block_size=16)
    assert "neighbours" not in capsys.readouterr().err
    shown = mine_neighbours(x, 3, backend=backend, block_size=16, progress=True)
    assert "50/50" in capsys.readouterr().err
    np.testing.assert_array_equal(shown, quiet)
