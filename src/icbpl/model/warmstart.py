"""Warm starts of the head: the target cluster of every sample before the ICBPL epochs."""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["init_starts", "init_targets", "neighbours_to_mine"]

logger = logging.getLogger(__name__)


def init_starts(init: str) -> tuple[str, ...]:
    """The warm starts that ``ICBPL(init=init)`` trains one head from each of, in order
    (``"auto"``: the k-means start, then SCAN's)."""
    return ("kmeans", "scan") if init == "auto" else (init,)


def neighbours_to_mine(init: str, n_neighbours: int, n_samples: int) -> int:
    """Neighbour columns to mine once for a fit: SCAN's start takes 20 (or ``n_neighbours`` if
    more; never more than ``n_samples - 1``), the kNN loss the first ``n_neighbours``."""
    if "scan" in init_starts(init):
        return min(max(20, n_neighbours), n_samples - 1)
    return n_neighbours


def init_targets(
    init: str,
    x: np.ndarray,
    views: np.ndarray | None,
    neighbours: np.ndarray | None,
    k: int,
    seed: int,
) -> np.ndarray | None:
    """The warm start's target cluster of every sample (``None`` for ``init="random"``).

    ``"kmeans"``: :func:`icbpl.core.smoothing.smoothed_kmeans` of the features.
    ``"scan"``: SCAN's clustering step without its self-labelling (the SCAN peer's ``"tuned"``
    schedule: 10 linear heads, the one with the lowest SCAN loss kept) on the same features,
    views and neighbours (all columns given; 20 mined by cosine if none).
    """
    from icbpl.core.smoothing import smoothed_kmeans
    from icbpl.peers import fit_peer

    if init == "kmeans":
        logger.info("warm start: k-means on neighbour-smoothed features")
        return smoothed_kmeans(x, k, seed=seed)
    if init == "scan":
        logger.info("warm start: SCAN's clustering step (10 linear heads)")
        return fit_peer(
            "scan",
            x,
            k,
            neighbours=neighbours,
            views=views,
            seed=seed % (2**32),
            schedule="tuned",
            self_label=False,
        ).labels
    return None
