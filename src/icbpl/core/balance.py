"""Per-cluster score offsets that leave no requested cluster empty (beyond the paper).

ICBPL assigns a sample to its best-scoring cluster, ``argmax_j s_ij``. When k is large, a few
PEDCC points can end up with no sample at all, and a user who asked for k clusters gets fewer.
`fill_offsets` finds offsets ``b`` (k,) such that every cluster wins at least ``m`` samples under
``argmax_j (s_ij + b_j)``: for a cluster with fewer than ``m`` samples, ``b_j`` is raised just
enough that its ``m`` most favourable samples (largest ``s_ij - max_{c != j} (s_ic + b_c)``) move
to it. Offsets are zero when no cluster is short, so they change nothing then; they are part of
the fitted model, so ``predict`` on the training samples gives the fitted labels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fill_offsets", "min_cluster_size"]

_MARGIN = 1e-6


def min_cluster_size(n_samples: int, n_clusters: int) -> int:
    """The smallest cluster `fill_offsets` allows: a tenth of the mean size, at least 1."""
    return max(1, n_samples // (10 * n_clusters))


def fill_offsets(scores: np.ndarray, min_size: int, *, max_rounds: int | None = None) -> np.ndarray:
    """Offsets ``b`` (k,) with at least ``min_size`` samples per cluster under
    ``argmax(scores + b)``, or as close as ``max_rounds`` rounds get (each round fixes the
    smallest cluster; default ``20 k``).

    Args:
        scores: (N, k) scores of each sample for each cluster (cosines or logits).
        min_size: wanted minimum cluster size (needs ``N >= k * min_size``).
    """
    s = np.asarray(scores, dtype=np.float64)
    n, k = s.shape
    if n < k * min_size:
        raise ValueError(f"{n} samples cannot fill {k} clusters of at least {min_size}")
    b = np.zeros(k)
    for _ in range(20 * k if max_rounds is None else max_rounds):
        t = s + b
        sizes = np.bincount(t.argmax(axis=1), minlength=k)
        j = int(sizes.argmin())
        if sizes[j] >= min_size:
            break
        others = np.delete(t, j, axis=1).max(axis=1)
        gain = t[:, j] - others  # > 0 where j already wins
        # donors: samples of clusters that stay at or above min_size after giving one away
        labels = t.argmax(axis=1)
        donor = (sizes[labels] > min_size) | (labels == j)
        cand = np.sort(gain[donor])[::-1]
        need = min(min_size, len(cand))
        b[j] += _MARGIN - cand[need - 1]
    return b.astype(np.float32)
