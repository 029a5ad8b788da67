"""One run of ICBPL or of a peer on a benchmark dataset, scored against its labels.

Every method gets the dataset's features, its views (when it has them) and the kNN list the
context mined once for the dataset; labels only score the result (and ICBPL's per-epoch history,
which never steers training or the choice of epoch).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from icbpl.core.metrics import evaluate
from icbpl_bench._context import BenchContext
from icbpl_bench._data import BenchData

if TYPE_CHECKING:
    from icbpl.model.estimator import ICBPL
    from icbpl.model.training import EpochRecord

__all__ = ["PEER_LABELS", "IcbplRun", "fit_icbpl", "run_peer"]

#: Row labels of the peers.
PEER_LABELS = {"kmeans": "k-means", "scan": "SCAN", "temi": "TEMI", "turtle": "TURTLE"}


@dataclass(frozen=True)
class IcbplRun:
    """The numbers of one ICBPL fit.

    Attributes:
        selected: the fitted model (best head by label-free score when ``n_heads > 1``): ``acc``,
            ``nmi``, ``ari``, ``seconds``, ``epoch`` (chosen without labels), ``score`` (its
            label-free score), ``best_epoch_acc`` (ACC of the best epoch by ACC: needs labels,
            a diagnostic only), ``empty`` (empty clusters).
        first_head: the same for head 0 alone, which is exactly the single-head (paper) model
            with this seed; ``seconds`` is the fit's time divided by the number of heads;
            ``best_epoch_acc`` and ``empty`` are NaN unless head 0 is the selected one.
        history: the selected head's per-epoch records (with ACC/NMI/ARI).
    """

    selected: dict[str, float]
    first_head: dict[str, float]
    history: list[EpochRecord]


def _neighbours(context: BenchContext, data: BenchData, k: int) -> np.ndarray | None:
    if k <= 0:
        return None
    return context.neighbours(data.name).indices[:, :k]


def fit_icbpl(
    context: BenchContext,
    data: BenchData,
    kwargs: Mapping[str, Any],
    seed: int,
    *,
    n_heads: int = 1,
    keep_model: bool = False,
) -> tuple[IcbplRun, ICBPL | None]:
    """Fit `icbpl.ICBPL` (``kwargs`` + ``n_clusters``, ``random_state=seed``, ``n_heads``).

    Neighbours are the first ``kwargs["n_neighbours"]`` (default 4) of the dataset's shared list;
    with ``init="scan"`` all its columns (SCAN's warm start uses them all, the kNN loss the first
    ``n_neighbours``).
    Runs are memoised in the context by (dataset, all ICBPL parameters) unless ``keep_model``,
    so that ablations sharing a configuration train it once; the model is returned only with
    ``keep_model``.
    """
    from icbpl.model.estimator import ICBPL

    model = ICBPL(n_clusters=data.n_clusters, n_heads=n_heads, random_state=seed, **kwargs)
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in model.get_params().items()}
    key = ("icbpl", data.name, json.dumps(params, sort_keys=True, default=str))
    if not keep_model and key in context.memo:
        return context.memo[key], None
    k = context.settings.n_mined if model.init == "scan" else int(model.n_neighbours)
    t = time.perf_counter()
    model.fit(
        data.features, data.labels, views=data.views, neighbours=_neighbours(context, data, k)
    )
    seconds = time.perf_counter() - t
    history = model.history_
    best_acc = max((r.metrics or {}).get("acc", math.nan) for r in history)
    sizes = np.bincount(model.labels_, minlength=data.n_clusters)
    selected = {
        **evaluate(data.labels, model.labels_),
        "seconds": seconds,
        "epoch": float(model.best_epoch_),
        "score": float(history[model.best_epoch_ - 1].score),
        "best_epoch_acc": float(best_acc),
        "empty": float((sizes == 0).sum()),
    }
    heads: list[dict[str, Any]] = model.heads_
    head0 = heads[0]
    is_selected = int(np.argmax([float(h["score"]) for h in heads])) == 0
    first = {
        **{m: float(head0["metrics"][m]) for m in ("acc", "nmi", "ari")},
        "seconds": seconds / n_heads,
        "epoch": float(head0["best_epoch"]),
        "score": float(head0["score"]),
        "best_epoch_acc": selected["best_epoch_acc"] if is_selected else math.nan,
        "empty": selected["empty"] if is_selected else math.nan,
    }
    run = IcbplRun(selected=selected, first_head=first, history=list(history))
    if not keep_model:
        context.memo[key] = run
    return run, model if keep_model else None


def run_peer(
    context: BenchContext,
    data: BenchData,
    name: str,
    options: Mapping[str, Any],
    seed: int,
) -> dict[str, float]:
    """`icbpl.peers.fit_peer` on the dataset's features, views and shared neighbours."""
    from icbpl.peers import fit_peer

    nb = context.neighbours(data.name).indices
    t = time.perf_counter()
    result = fit_peer(
        name, data.features, data.n_clusters, neighbours=nb, views=data.views, seed=seed, **options
    )
    seconds = time.perf_counter() - t
    return {
        **evaluate(data.labels, result.labels),
        "seconds": seconds,
        "empty": float(result.info.get("n_empty_clusters", math.nan)),
    }


def describe(kwargs: Mapping[str, Any]) -> str:
    """``epochs 8, batch_size 256`` for a table's settings line."""
    return ", ".join(f"{k} {v}" for k, v in kwargs.items()) or "defaults"
