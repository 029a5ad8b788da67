"""The peers' front door: registry, named schedules, input validation, seeding, :class:`PeerResult`.

Every peer registers named *schedules*: sets of option values. ``"official"`` is the authors'
defaults and schedule as their public code runs them (the peer function's own keyword defaults,
and the default of :func:`fit_peer`); ``"tuned"``, where a peer has one, is our variant for
frozen features, measured to be stronger (see docs/notes/peers.md). Explicit keyword options
of :func:`fit_peer` override the schedule's values and are recorded in ``info["overrides"]``.
"""

from __future__ import annotations

import inspect
import logging
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from icbpl.core.neighbours import mine_neighbours
from icbpl.util.device import seeded

__all__ = [
    "PeerResult",
    "Schedule",
    "fit_peer",
    "list_peers",
    "peer_schedules",
    "register_peer",
    "schedule_label",
]

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


@dataclass(frozen=True)
class Schedule:
    """A named set of option values of one peer.

    Attributes:
        options: keyword options of the peer that differ from its function's defaults (which are
            the authors' official values, so ``"official"`` has none).
        label: a short description for tables, e.g. ``"1 head, Adam 1e-4, 50 + 200 epochs"``.
    """

    options: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""


OFFICIAL = "official"
"""Name of the schedule :func:`fit_peer` runs unless told otherwise."""

PeerFn = Callable[..., PeerResult]
"""A registered peer: ``fn(X, n_clusters, *, neighbours, views, seed, **options) -> PeerResult``
with ``X`` a validated float32 (N, D) tensor, ``neighbours`` an int64 (N, K) tensor or ``None``
and ``views`` a float32 (V, N, D) tensor or ``None``, all on one device. Options are keyword-only
parameters with defaults."""

_F = TypeVar("_F", bound=PeerFn)

_FIXED = {"X", "n_clusters", "neighbours", "views", "seed"}
_PEERS: dict[str, PeerFn] = {}
_SCHEDULES: dict[str, dict[str, Schedule]] = {}
_MINIMUMS: dict[str, dict[str, int]] = {}


def register_peer(
    name: str,
    schedules: Mapping[str, Schedule] | None = None,
    minimums: Mapping[str, int] | None = None,
) -> Callable[[_F], _F]:
    """Decorator registering a peer function under ``name`` (see :data:`PeerFn`).

    ``schedules`` maps schedule names to :class:`Schedule` objects; it must hold ``"official"``
    (added with no options when absent: the function's defaults). ``minimums`` maps integer
    options to their smallest valid value; :func:`fit_peer` checks them, in that order, before
    calling the function. Every option named in either must be a keyword option of the function.
    """

    def deco(fn: _F) -> _F:
        if name in _PEERS:
            raise ValueError(f"a peer named {name!r} is already registered")
        table = dict(schedules or {})
        table.setdefault(OFFICIAL, Schedule())
        known = set(_keyword_defaults(fn))
        named = {f"schedule {k!r}": set(v.options) for k, v in table.items()}
        named["minimums"] = set(minimums or {})
        for what, options in named.items():
            unknown = sorted(options - known)
            if unknown:
                raise ValueError(f"{what} of peer {name!r} sets unknown {unknown}")
        _PEERS[name] = fn
        _SCHEDULES[name] = table
        _MINIMUMS[name] = dict(minimums or {})
        return fn

    return deco


def list_peers() -> list[str]:
    """Names accepted by :func:`fit_peer`, sorted."""
    return sorted(_PEERS)


def _keyword_defaults(fn: PeerFn) -> dict[str, Any]:
    sig = inspect.signature(fn)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in _FIXED
    }


def peer_options(name: str, schedule: str = OFFICIAL) -> dict[str, Any]:
    """The keyword options of peer ``name`` with their values under ``schedule``."""
    options = _keyword_defaults(_get(name))
    options.update(_schedule(name, schedule).options)
    return options


def peer_schedules(name: str) -> dict[str, Schedule]:
    """The named schedules of peer ``name`` (``"official"`` first)."""
    _get(name)
    table = _SCHEDULES.get(name) or {OFFICIAL: Schedule()}
    return dict(sorted(table.items(), key=lambda kv: (kv[0] != OFFICIAL, kv[0])))


def _schedule(name: str, schedule: str) -> Schedule:
    table = peer_schedules(name)
    if schedule not in table:
        raise ValueError(
            f"peer {name!r} has no schedule {schedule!r}; its schedules: {list(table)}"
        )
    return table[schedule]


def schedule_label(
    name: str, schedule: str = OFFICIAL, overrides: Mapping[str, Any] | None = None
) -> str:
    """A table's description of a peer run: ``"official (1 head, ...)"``, plus any overrides.

    ``overrides`` are the explicit options of the run (``info["overrides"]`` of its result); a
    run with overrides is not the named schedule, and the label says so:
    ``"official (...), changed: epochs 6"``.
    """
    spec = _schedule(name, schedule)
    text = f"{schedule} ({spec.label})" if spec.label else schedule
    if overrides:
        text += ", changed: " + ", ".join(f"{k} {v}" for k, v in overrides.items())
    return text


def _get(name: str) -> PeerFn:
    try:
        return _PEERS[name]
    except KeyError:
        raise ValueError(f"unknown peer {name!r}; known peers: {list_peers()}") from None


def as_float_tensor(a: Any, name: str, device: torch.device | None) -> Tensor:
    """``a`` (array or tensor) as a contiguous float32 tensor on ``device`` (default: its own);
    ValueError naming ``name`` when it holds NaN or inf."""
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
    x = as_float_tensor(X, "X", dev)

    v = None
    if views is not None:
        v = as_float_tensor(views, "views", x.device)
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


def _plain(value: Any) -> Any:
    """``value`` if JSON-friendly (scalars, strings, lists of them), else a short description."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(
        v is None or isinstance(v, (bool, int, float, str)) for v in value
    ):
        return list(value)
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(str(_plain(v)) for v in value)}]"
    shape = getattr(value, "shape", None)
    return f"<{type(value).__name__} {tuple(shape)}>" if shape is not None else repr(value)


def fit_peer(
    name: str,
    X: Any,
    n_clusters: int,
    *,
    neighbours: Any = None,
    views: Any = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    schedule: str = OFFICIAL,
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
        schedule: a named set of option values (see :func:`peer_schedules`): ``"official"``
            (the authors' defaults and schedule) or, for peers that have one, ``"tuned"``.
        **kwargs: method hyper-parameters, overriding the schedule's; see each method's
            docstring or :func:`icbpl.peers.peer_options`.

    Returns:
        :class:`PeerResult` with numpy ``labels`` (N,), ``probs`` (N, k) or ``None`` and
        ``info`` (which also holds ``schedule``, ``overrides`` and ``schedule_label``).
    """
    fn = _get(name)
    spec = _schedule(name, schedule)
    options = _keyword_defaults(fn)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise TypeError(
            f"peer {name!r} got unknown options {unknown}; it accepts {sorted(options)}"
        )
    x, nb, v = _check_inputs(X, n_clusters, neighbours, views, seed, device)
    run_options = {**spec.options, **kwargs}
    for option, low in _MINIMUMS.get(name, {}).items():
        value = run_options.get(option, options[option])
        if value < low:
            raise ValueError(f"{option}={value} should be >= {low}")
    overrides = {k: _plain(v) for k, v in kwargs.items()}
    start = time.perf_counter()
    with seeded(int(seed), x.device):
        result = fn(x, int(n_clusters), neighbours=nb, views=v, seed=int(seed), **run_options)
    elapsed = time.perf_counter() - start
    info: dict[str, Any] = {
        "method": name,
        "seed": int(seed),
        "n_clusters": int(n_clusters),
        "schedule": schedule,
        "overrides": overrides,
        "schedule_label": schedule_label(name, schedule, overrides),
    }
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
