"""Clustering metrics: ACC (Hungarian matching), NMI, ARI, cluster sizes."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = ["cluster_accuracy", "cluster_sizes", "evaluate", "match_clusters"]


def _as_labels(y: Any, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} should be 1-D, got shape {arr.shape}")
    return arr


def match_clusters(y_true: Any, y_pred: Any) -> dict[int, int]:
    """Best one-to-one map from predicted cluster ids to true label ids (Hungarian algorithm).

    Labels may be any integers; the map is between their sorted unique values.
    """
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.shape[0]} labels but y_pred has {p.shape[0]}")
    tu, ti = np.unique(t, return_inverse=True)
    pu, pi = np.unique(p, return_inverse=True)
    n = max(len(tu), len(pu))
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (pi, ti), 1)
    rows, cols = linear_sum_assignment(-counts)
    return {
        int(pu[r]): int(tu[c])
        for r, c in zip(rows, cols, strict=True)
        if r < len(pu) and c < len(tu)
    }


def cluster_accuracy(y_true: Any, y_pred: Any) -> float:
    """Clustering accuracy: the fraction correct under the best one-to-one relabelling."""
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    if t.size == 0:
        raise ValueError("y_true is empty")
    mapping = match_clusters(t, p)
    mapped = np.array([mapping.get(int(v), np.iinfo(np.int64).min) for v in p])
    return float((mapped == t).mean())


def cluster_sizes(labels: Any, n_clusters: int) -> np.ndarray:
    """Count of samples in each of ``n_clusters`` clusters (zeros for empty ones)."""
    lab = _as_labels(labels, "labels").astype(np.int64)
    return np.bincount(lab, minlength=n_clusters)


def evaluate(y_true: Any, y_pred: Any) -> dict[str, float]:
    """ACC, NMI and ARI of a clustering against ground-truth labels."""
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    return {
        "acc": cluster_accuracy(t, p),
        "nmi": float(normalized_mutual_info_score(t, p)),
        "ari": float(adjusted_rand_score(t, p)),
    }
