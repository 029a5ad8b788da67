"""The default warm start: k-means on neighbour-smoothed features (icbpl.core.smoothing)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_blobs

from icbpl.core.metrics import evaluate
from icbpl.core.smoothing import smooth_features, smoothed_kmeans


def _reference(z: np.ndarray, k: int, hops: int) -> np.ndarray:
    """The module formula with loops: exact cosine kNN (self dropped), then row averages."""
    sims = z @ z.T
    np.fill_diagonal(sims, -np.inf)
    nb = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    for _ in range(hops):
        new = np.empty_like(z)
        for i in range(len(z)):
            row = (z[i] + z[nb[i]].sum(axis=0)) / (k + 1)
            new[i] = row / np.linalg.norm(row)
        z = new
    return z


def test_smoothing_matches_a_loop_reference() -> None:
    x, _ = make_blobs(120, n_features=16, centers=3, random_state=0)
    x = x.astype(np.float32)
    z0 = smooth_features(x, hops=0)
    assert z0.shape == (120, 16)  # PCA keeps min(128, D, N) directions
    np.testing.assert_allclose(np.linalg.norm(z0, axis=1), 1.0, atol=1e-5)
    got = smooth_features(x, n_neighbours=5, hops=2)
    np.testing.assert_allclose(got, _reference(z0.astype(np.float64), 5, 2), atol=1e-4)


def test_smoothed_kmeans_recovers_noisy_blobs() -> None:
    """Every cluster used, the blobs found (where it beats plain k-means is measured on real
    features in benchmarks/bench_defaults.py, not on Gaussian blobs)."""
    x, y = make_blobs(600, n_features=32, centers=6, cluster_std=6.0, random_state=2)
    x = x.astype(np.float32)
    labels = smoothed_kmeans(x, 6, seed=0)
    assert labels.shape == (600,) and set(labels.tolist()) == set(range(6))
    assert evaluate(y, labels)["acc"] >= 0.95
    np.testing.assert_array_equal(labels, smoothed_kmeans(x, 6, seed=0))  # seeded


def test_smoothed_kmeans_reads_a_memory_map(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x, _ = make_blobs(300, n_features=8, centers=3, random_state=1)
    path = tmp_path / "x.npy"
    np.save(path, x.astype(np.float32))
    mm = np.load(path, mmap_mode="r")
    np.testing.assert_array_equal(
        smoothed_kmeans(mm, 3, seed=1), smoothed_kmeans(np.asarray(mm), 3, seed=1)
    )
