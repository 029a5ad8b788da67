"""The default warm start: k-means on neighbour-smoothed features (beyond the paper).

Pooled encoder features are noisy; averaging each row with its nearest neighbours is a low-pass
filter on the kNN graph (as in simplified graph convolutions) that pulls samples of one class
together before k-means partitions them:

    z^(0) = PCA_p(normalise(x - mean(x)))                       (p = min(128, D, N) directions)
    z^(t) = normalise((z_i^(t-1) + sum_{j in kNN(i)} z_j^(t-1)) / (k + 1)),   t = 1..hops

with the kNN graph mined once on ``z^(0)`` by cosine. `smoothed_kmeans` runs k-means on
``z^(hops)``. Measured on efficientnet_lite0 features (docs/BENCHMARKS.md, quality notes), it is
above plain k-means on CIFAR-10, Tiny-ImageNet folders and digits; ICBPL then refines it.
The PCA keeps the cost and memory at O(N p) whatever D is.
"""

from __future__ import annotations

import numpy as np

__all__ = ["smooth_features", "smoothed_kmeans"]

_PCA_DIM = 128
_PCA_FIT_ROWS = 20_000
_BLOCK = 65_536
_FULL_KMEANS_ROWS = 50_000


def _normalise(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def _reduced(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Centred, L2-normalised rows projected on ``dim`` PCA directions, (N, dim) float32.

    The mean and the directions come from at most 20,000 rows; rows are read block by block,
    so a memory-mapped ``x`` is never copied whole.
    """
    from sklearn.decomposition import PCA

    n = len(x)
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, size=min(n, _PCA_FIT_ROWS), replace=False))
    sample = np.asarray(x[fit_rows], dtype=np.float32)
    mean = sample.mean(axis=0, keepdims=True)
    dim = min(dim, sample.shape[1], len(sample))
    pca = PCA(dim, random_state=seed % (2**32), svd_solver="auto").fit(_normalise(sample - mean))
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, _BLOCK):
        block = np.asarray(x[start : start + _BLOCK], dtype=np.float32)
        out[start : start + len(block)] = pca.transform(_normalise(block - mean))
    return out


def smooth_features(
    x: np.ndarray, *, n_neighbours: int = 10, hops: int = 2, seed: int = 0
) -> np.ndarray:
    """``z^(hops)`` of the module formula, (N, p) float32 unit rows.

    Args:
        x: (N, D) features (a memory map is read block by block).
        n_neighbours: k of the kNN graph (capped at N - 1).
        hops: how many times each row is averaged with its neighbours (0: just the PCA).
        seed: seed of the PCA's row sample and solver.
    """
    from icbpl.core.neighbours import mine_neighbours

    z = _normalise(_reduced(x, _PCA_DIM, seed))
    k = min(int(n_neighbours), len(z) - 1)
    if hops <= 0 or k < 1:
        return z
    idx = mine_neighbours(z, k)
    for _ in range(hops):
        acc = z.copy()
        for col in range(k):
            acc += z[idx[:, col]]
        z = _normalise(acc / (k + 1)).astype(np.float32)
    return z


def smoothed_kmeans(x: np.ndarray, n_clusters: int, *, seed: int = 0) -> np.ndarray:
    """k-means labels (N,) of `smooth_features` ``(x)``.

    Up to 50,000 rows: scikit-learn's ``KMeans`` (k-means++, 10 starts, the lowest inertia
    kept); above: ``MiniBatchKMeans`` (3 starts, batches of 4,096), whose cost grows as N.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    z = smooth_features(x, seed=seed)
    state = seed % (2**32)
    if len(z) <= _FULL_KMEANS_ROWS:
        km = KMeans(n_clusters, n_init=10, random_state=state)
    else:
        km = MiniBatchKMeans(n_clusters, n_init=3, batch_size=4096, random_state=state)
    return np.asarray(km.fit_predict(z), dtype=np.int64)
