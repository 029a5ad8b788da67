"""k-means on fixed features (scikit-learn), the baseline every deep-clustering paper reports."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import Tensor

from icbpl.peers._registry import PeerResult, Schedule, register_peer

_OFFICIAL = Schedule(
    label="k-means++ on L2-normalised rows, best of 10 runs, at most 300 iterations"
)
_RAW = Schedule(
    options={"normalize": False, "max_iter": 1000},
    label="k-means++ on the raw features, best of 10 runs, at most 1000 iterations "
    "(TURTLE's k-means baseline)",
)


@register_peer(
    "kmeans", schedules={"official": _OFFICIAL, "raw": _RAW}, minimums={"n_init": 1, "max_iter": 1}
)
def fit_kmeans(
    X: Tensor,
    n_clusters: int,
    *,
    neighbours: Tensor | None,
    views: Tensor | None,
    seed: int,
    normalize: bool = True,
    n_init: int = 10,
    max_iter: int = 300,
) -> PeerResult:
    """Lloyd's k-means, ``argmin_C sum_i min_j ||x_i - c_j||^2``, best of ``n_init`` k-means++ runs.

    By default the rows are L2-normalised first (``normalize=True``): k-means in the cosine
    geometry that ICBPL, SCAN and TEMI use for their neighbours (ICBPL's head also lives on the
    unit sphere). ``normalize=False`` clusters the raw features, as the k-means baselines in the
    TEMI and TURTLE code do (TEMI optionally standardises per dimension first).
    ``neighbours`` and ``views`` are ignored. ``probs`` is ``None``: k-means has no natural soft
    assignment.
    """
    x = X.detach().cpu().double()
    if normalize:
        x = torch.nn.functional.normalize(x, dim=1, eps=1e-12)
    km = KMeans(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed)
    labels = km.fit_predict(x.numpy()).astype(np.int64)
    info = {
        "normalize": normalize,
        "n_init": n_init,
        "inertia": float(km.inertia_),
        "n_iter": int(km.n_iter_),
    }
    return PeerResult(labels=labels, probs=None, info=info)
