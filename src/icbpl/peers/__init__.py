"""Peer clustering methods on fixed features: k-means, SCAN, TEMI, TURTLE.

All take the inputs ICBPL takes (features ``X`` (N, D), optional kNN ``neighbours`` (N, K),
optional augmented ``views`` (V, N, D)) through one front door::

    from icbpl.peers import fit_peer, list_peers
    result = fit_peer("temi", X, n_clusters=10, seed=0)
    result.labels, result.probs, result.info

Each method's hyper-parameters are keyword options of :func:`fit_peer` (see
:func:`peer_options`); the loss functions are exported for inspection and testing.
"""

from __future__ import annotations

from icbpl.core.scan import scan_loss, scan_self_label_loss
from icbpl.peers import _kmeans as _kmeans  # registers "kmeans"
from icbpl.peers import _scan as _scan  # registers "scan"
from icbpl.peers._registry import PeerResult, fit_peer, list_peers, peer_options, register_peer
from icbpl.peers._temi import temi_loss
from icbpl.peers._turtle import turtle_loss

__all__ = [
    "PeerResult",
    "fit_peer",
    "list_peers",
    "peer_options",
    "register_peer",
    "scan_loss",
    "scan_self_label_loss",
    "temi_loss",
    "turtle_loss",
]
