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


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def feature_centroids(features: np.ndarray, clusters: np.ndarray, k: int) -> np.ndarray:
    """``(k, D)`` float32 unit mean direction of each cluster's normalised features (zeros for
    an empty cluster, which then never is the nearest)."""
    f = _unit(features)
    sums = np.zeros((k, f.shape[1]))
    np.add.at(sums, np.asarray(clusters, dtype=np.int64), f)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.where(norms > 0, sums / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def _cosines(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    cos = _unit(features) @ np.asarray(centroids, dtype=np.float64).T
    cos[:, ~np.asarray(centroids).any(axis=1)] = -np.inf  # empty clusters
    return cos


def similarity(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(N,)`` cosine of each image's features to the nearest cluster centroid."""
    return _cosines(features, centroids).max(axis=1)


def confidence(features: np.ndarray, clusters: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(N,)`` cosine to the assigned cluster's centroid minus the best other cosine, in
    [-2, 2]; high: clearly this cluster, near 0: between two clusters."""
    cos = _cosines(features, centroids)
    rows = np.arange(len(cos))
    own = cos[rows, clusters].copy()
    cos[rows, clusters] = -np.inf
    other = cos.max(axis=1) if cos.shape[1] > 1 else np.full(len(cos), -1.0)
    return own - np.where(np.isfinite(other), other, -1.0)


def calibrate(train_similarity: np.ndarray, quantile: float = DEFAULT_QUANTILE) -> float:
    """The "unassigned" threshold: the ``quantile`` of the training images' similarities."""
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile={quantile!r} should be in [0, 1)")
    return float(np.quantile(np.asarray(train_similarity, dtype=np.float64), quantile))
