"""Peer clustering methods on fixed features: k-means, SCAN, TEMI, TURTLE.

All take the inputs ICBPL takes (features ``X`` (N, D), optional kNN ``neighbours`` (N, K),
optional augmented ``views`` (V, N, D)) through one front door::

    from icbpl.peers import fit_peer, list_peers
    result = fit_peer("temi", X, n_clusters=10, seed=0)  # schedule="official"
    result.labels, result.probs, result.info

Each method's hyper-parameters are keyword options of :func:`fit_peer` (see
:func:`peer_options`). Named schedules (:func:`peer_schedules`) set them together:
``"official"``, the authors' defaults and schedule (the default), and for SCAN and TEMI
``"tuned"``, our variant for frozen features; :func:`schedule_label` describes a run for a
table (also in ``result.info["schedule_label"]``). The loss functions are exported for
inspection and testing; docs/notes/peers.md compares every value with the authors' code.
"""

from __future__ import annotations

from icbpl.core.scan import scan_eval_loss, scan_loss, scan_self_label_loss
from icbpl.peers import _kmeans as _kmeans  # registers "kmeans"
from icbpl.peers import _scan as _scan  # registers "scan"
from icbpl.peers._registry import (
    PeerResult,
    Schedule,
    fit_peer,
    list_peers,
    peer_options,
    peer_schedules,
    register_peer,
    schedule_label,
)
from icbpl.peers._temi import temi_loss
from icbpl.peers._turtle import turtle_loss

__all__ = [
    "PeerResult",
    "Schedule",
    "fit_peer",
    "list_peers",
    "peer_options",
    "peer_schedules",
    "register_peer",
    "scan_eval_loss",
    "scan_loss",
    "scan_self_label_loss",
    "schedule_label",
    "temi_loss",
    "turtle_loss",
]
