"""The peers' front door: registry, input validation, seeding, :class:`PeerResult`."""

from __future__ import annotations

import inspect
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from icbpl.core.neighbours import mine_neighbours
from icbpl.util.device import seeded

__all__ = ["PeerResult", "fit_peer", "list_peers", "register_peer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerResult:
    """What a peer method returns.

    Attributes:
        labels: hard cluster assignments, int64 ``(N,)`` with values in ``[0, n_clusters)``.
        probs: soft assignments, float32 ``(N, n_clusters)`` rows summing to 1, or ``None`` for
            methods without a natural soft output (k-means).
        info: JSON-friendly facts about the run (method, seed, hyper-parameters, final losses,
            chosen head, wall time).
    """

    labels: np.ndarray
    probs: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)


PeerFn = Callable[..., PeerResult]
"""A registered peer: ``fn(X, n_clusters, *, neighbours, views, seed, **options) -> PeerResult``
with ``X`` a validated float32 (N, D) tensor, ``neighbours`` an int64 (N, K) tensor or ``None``
and ``views`` a float32 (V, N, D) tensor or ``None``, all on one device. Options are keyword-only
parameters with defaults."""

_F = TypeVar("_F", bound=PeerFn)

_FIXED = {"X", "n_clusters", "neighbours", "views", "seed"}
_PEERS: dict[str, PeerFn] = {}


def register_peer(name: str) -> Callable[[_F], _F]:
    """Decorator registering a peer function under ``name`` (see :data:`PeerFn`)."""

    def deco(fn: _F) -> _F:
        if name in _PEERS:
            raise ValueError(f"a peer named {name!r} is already registered")
        _PEERS[name] = fn
        return fn

    return deco


def list_peers() -> list[str]:
    """Names accepted by :func:`fit_peer`, sorted."""
    return sorted(_PEERS)


def peer_options(name: str) -> dict[str, Any]:
    """The keyword options of peer ``name`` with their defaults."""
    sig = inspect.signature(_get(name))
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in _FIXED
    }


def _get(name: str) -> PeerFn:
    try:
        return _PEERS[name]
    except KeyError:
        raise ValueError(f"unknown peer {name!r}; known peers: {list_peers()}") from None


def _as_float_tensor(a: Any, name: str, device: torch.device | None) -> Tensor:
    if isinstance(a, Tensor):
        t = a.detach()
    else:
        t = torch.as_tensor(np.asarray(a, dtype=np.float32))
    t = t.to(dtype=torch.float32, device=device if device is not None else t.device)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf values; clean or impute them first")
    return t.contiguous()


def _check_inputs(
    X: Any,
    n_clusters: int,
    neighbours: Any,
    views: Any,
    seed: int,
    device: str | torch.device | None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    dev = torch.device(device) if device is not None else None
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
        raise TypeError(f"n_clusters should be an int, got {type(n_clusters).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed should be an int, got {type(seed).__name__}")
    if n_clusters < 2:
        raise ValueError(f"n_clusters={n_clusters} should be >= 2")
    shape = tuple(np.shape(X)) if not isinstance(X, Tensor) else tuple(X.shape)
    if len(shape) != 2 or shape[1] < 1:
        raise ValueError(f"X should be a 2-D (n_samples, n_features) array, got shape {shape}")
    n = shape[0]
    if n < n_clusters:
        raise ValueError(f"n_samples={n} should be >= n_clusters={n_clusters}")
    x = _as_float_tensor(X, "X", dev)

    v = None
    if views is not None:
        v = _as_float_tensor(views, "views", x.device)
        if v.ndim == 2:
            v = v.unsqueeze(0)
        if v.ndim != 3 or v.shape[1:] != x.shape or v.shape[0] < 1:
            raise ValueError(
                f"views should have shape (n_views, {n}, {x.shape[1]}) to match X, "
                f"got {tuple(views.shape) if hasattr(views, 'shape') else np.shape(views)}"
            )

    nb = None
    if neighbours is not None:
        arr = neighbours.detach().cpu().numpy() if isinstance(neighbours, Tensor) else neighbours
        arr = np.asarray(arr)
        if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < 1:
            raise ValueError(
                f"neighbours should have shape ({n}, n_neighbours) to match X, got {arr.shape}"
            )
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"neighbours should hold integer indices, got dtype {arr.dtype}")
        if arr.min() < 0 or arr.max() >= n:
            raise ValueError(
                f"neighbour indices should lie in [0, {n}), got range [{arr.min()}, {arr.max()}]"
            )
        nb = torch.as_tensor(arr.astype(np.int64), device=x.device)
    return x, nb, v


def resolve_neighbours(
    x: Tensor, neighbours: Tensor | None, n_neighbours: int | None, default: int
) -> Tensor:
    """The ``(N, K)`` neighbour indices a peer trains with.

    Given ``neighbours`` are used (their first ``n_neighbours`` columns when that is set);
    otherwise ``n_neighbours`` (or ``default``) cosine neighbours, capped at ``N - 1``, are mined
    with :func:`icbpl.core.neighbours.mine_neighbours` (faiss on CPU, torch on accelerators; the
    sample itself is never its own neighbour, also among exact duplicates).
    """
    n = x.shape[0]
    if neighbours is not None:
        if n_neighbours is None:
            return neighbours
        if n_neighbours < 1:
            raise ValueError(f"n_neighbours={n_neighbours} should be >= 1")
        return neighbours[:, :n_neighbours]
    k = default if n_neighbours is None else n_neighbours
    if k < 1:
        raise ValueError(f"n_neighbours={k} should be >= 1")
    if n < 2:
        raise ValueError(f"mining neighbours needs n_samples >= 2, got {n}")
    k = min(k, n - 1)
    idx = mine_neighbours(x.detach(), k)
    return torch.as_tensor(idx, dtype=torch.int64, device=x.device)


def fit_peer(
    name: str,
    X: Any,
    n_clusters: int,
    *,
    neighbours: Any = None,
    views: Any = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> PeerResult:
    """Cluster fixed features ``X`` with the peer method ``name`` (see :func:`list_peers`).

    Args:
        name: ``"kmeans"``, ``"scan"``, ``"temi"`` or ``"turtle"`` (or any registered name).
        X: features, (N, D) float array or tensor; must be finite.
        n_clusters: number of clusters k, ``2 <= k <= N``.
        neighbours: (N, K) int indices of each sample's nearest neighbours, itself excluded
            (mined by cosine with :func:`icbpl.core.neighbours.mine_neighbours` when a method needs
            them and none are given).
        views: (V, N, D) features of augmented views of the same N samples, or ``None``.
        seed: seeds every random choice; equal seeds give equal results on CPU.
        device: where to compute; default: X's device for tensors, else CPU.
        **kwargs: method hyper-parameters; see each method's docstring or
            :func:`icbpl.peers.peer_options`.

    Returns:
        :class:`PeerResult` with numpy ``labels`` (N,), ``probs`` (N, k) or ``None`` and ``info``.
    """
    fn = _get(name)
    options = peer_options(name)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise TypeError(
            f"peer {name!r} got unknown options {unknown}; it accepts {sorted(options)}"
        )
    x, nb, v = _check_inputs(X, n_clusters, neighbours, views, seed, device)
    start = time.perf_counter()
    with seeded(int(seed), x.device):
        result = fn(x, int(n_clusters), neighbours=nb, views=v, seed=int(seed), **kwargs)
    elapsed = time.perf_counter() - start
    info = {"method": name, "seed": int(seed), "n_clusters": int(n_clusters)}
    info.update(result.info)
    info["time_s"] = elapsed
    sizes = np.bincount(result.labels, minlength=n_clusters)
    n_empty = int((sizes == 0).sum())
    info["n_empty_clusters"] = n_empty
    if n_empty:
        warnings.warn(
            f"{name}: {n_empty} of {n_clusters} clusters are empty (sizes {sizes.tolist()})",
            stacklevel=2,
        )
    logger.info("%s: %d samples -> %d clusters in %.1fs", name, x.shape[0], n_clusters, elapsed)
    return PeerResult(labels=result.labels, probs=result.probs, info=info)


def to_result(probs: Tensor, info: dict[str, Any]) -> PeerResult:
    """Wrap soft assignments (N, k) as a :class:`PeerResult` (labels = argmax)."""
    p = probs.detach().float().cpu()
    return PeerResult(
        labels=p.argmax(dim=1).numpy().astype(np.int64), probs=p.numpy(), info=dict(info)
    )
