"""Confidence and novelty in the encoder's feature space (not the trained latent).

The ICBPL losses pull the latent onto the PEDCC points, so a latent cosine is high for almost
every image, right or wrong, seen class or not. These scores use the encoder features instead:
each cluster is summarised by the mean direction of its members' L2-normalised features
(:func:`feature_centroids`), and

* :func:`similarity` is an image's cosine to the nearest of those centroids: low means far
  from every cluster. :func:`calibrate` turns it into an "unassigned" decision: the threshold is
  the ``quantile`` (default 5%) of the training images' own similarities, so about that share of
  training-like images is refused and images unlike every cluster fall below it;
* :func:`confidence` is the margin between the cosine to the assigned cluster's centroid and
  the best other centroid: images between two clusters (the likely wrong assignments) get a
  small margin.

Measured in ``benchmarks/bench_practitioner.py`` (docs/BENCHMARKS.md, section "practitioner").
"""

from __future__ import annotations

import numpy as np

__all__ = ["calibrate", "confidence", "feature_centroids", "similarity"]

#: Share of the training images whose similarity falls below the "unassigned" threshold.
DEFAULT_QUANTILE = 0.05


#: Rows handled at a time, so that memory stays bounded on memory-mapped features of any size.
BLOCK = 65536


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _blocks(n: int) -> range:
    return range(0, n, BLOCK)


def feature_centroids(features: np.ndarray, clusters: np.ndarray, k: int) -> np.ndarray:
    """``(k, D)`` float32 unit mean direction of each cluster's normalised features (zeros for
    an empty cluster, which then never is the nearest). Reads ``features`` block by block."""
    cl = np.asarray(clusters, dtype=np.int64)
    sums = np.zeros((k, features.shape[1]))
    for s in _blocks(len(cl)):
        f, c = _unit(features[s : s + BLOCK]), cl[s : s + BLOCK]
        order = np.argsort(c, kind="stable")
        ordered = c[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        sums[ordered[starts]] += np.add.reduceat(f[order], starts, axis=0)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.where(norms > 0, sums / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def _cosines(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    cos = _unit(features) @ np.asarray(centroids, dtype=np.float64).T
    cos[:, ~np.asarray(centroids).any(axis=1)] = -np.inf  # empty clusters
    return cos


def similarity(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(N,)`` cosine of each image's features to the nearest cluster centroid."""
    n = len(features)
    out = np.empty(n)
    for s in _blocks(n):
        out[s : s + BLOCK] = _cosines(features[s : s + BLOCK], centroids).max(axis=1)
    return out


def _margin(cos: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    rows = np.arange(len(cos))
    own = cos[rows, clusters].copy()
    cos[rows, clusters] = -np.inf
    other = cos.max(axis=1) if cos.shape[1] > 1 else np.full(len(cos), -1.0)
    return own - np.where(np.isfinite(other), other, -1.0)


def confidence(features: np.ndarray, clusters: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(N,)`` cosine to the assigned cluster's centroid minus the best other cosine, in
    [-2, 2]; high: clearly this cluster, near 0: between two clusters."""
    cl = np.asarray(clusters, dtype=np.int64)
    out = np.empty(len(cl))
    for s in _blocks(len(cl)):
        cos = _cosines(features[s : s + BLOCK], centroids)
        out[s : s + BLOCK] = _margin(cos, cl[s : s + BLOCK])
    return out


def calibrate(train_similarity: np.ndarray, quantile: float = DEFAULT_QUANTILE) -> float:
    """The "unassigned" threshold: the ``quantile`` of the training images' similarities."""
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile={quantile!r} should be in [0, 1)")
    return float(np.quantile(np.asarray(train_similarity, dtype=np.float64), quantile))
