"""Label-free model selection.

The paper stops training "when ACC reaches its maximum", which needs labels. We select the epoch
that maximises a score computed from the data alone:

    score = agreement * balance,
    agreement = fraction of (sample, neighbour) pairs, neighbours mined in the *input* feature
                space, that fall in the same cluster;
    balance   = H(cluster sizes) / log(k)   (normalised entropy; 1 for equal sizes).

Agreement alone is maximised by putting everything in one cluster; balance alone by any equal
split. Their product rewards partitions that respect the input-space neighbourhoods without
collapsing. Without neighbours, only balance is used.
"""

from __future__ import annotations

import numpy as np

__all__ = ["label_free_score", "neighbour_agreement", "size_balance"]


def neighbour_agreement(labels: np.ndarray, neighbours: np.ndarray) -> float:
    """Fraction of (i, neighbour of i) pairs with the same cluster label."""
    labels = np.asarray(labels)
    return float((labels[neighbours] == labels[:, None]).mean())


def size_balance(labels: np.ndarray, n_clusters: int) -> float:
    """Normalised entropy of the cluster sizes, in [0, 1]."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_clusters)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(n_clusters))


def label_free_score(labels: np.ndarray, neighbours: np.ndarray | None, n_clusters: int) -> float:
    """``neighbour_agreement * size_balance`` (just the balance when ``neighbours`` is None)."""
    balance = size_balance(labels, n_clusters)
    if neighbours is None or neighbours.size == 0:
        return balance
    return neighbour_agreement(labels, neighbours) * balance
