"""Ablations of ICBPL (the paper's Tables 4, 5, 6 and 10): one setting changed at a time.

``neighbours`` (k of the kNN loss), ``distance`` (cosine vs euclidean), ``losses`` (subsets of
the four losses by zero weights) and ``refresh`` (how often the kNN list is re-mined from the
latent space). All rows of one table use the same data, neighbours and seeds; a configuration two
tables share (the paper's defaults) is trained once per run. Rows give the metrics at the epoch
chosen without labels and, as a diagnostic, the ACC of the best epoch by ACC (needs labels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from icbpl_bench._context import BenchContext
from icbpl_bench._data import DatasetUnavailable
from icbpl_bench._methods import describe, fit_icbpl
from icbpl_bench._registry import register_experiment
from icbpl_bench._results import METRICS, SECONDS, Column, ResultLog
from icbpl_bench._settings import Plan

__all__ = ["ABLATION_COLUMNS", "Variant", "run_ablation"]

ABLATION_COLUMNS = (
    *METRICS,
    Column("best_epoch_acc", "best-epoch ACC (labels)"),
    Column("epoch", "selected epoch", 1),
    SECONDS,
)


@dataclass(frozen=True)
class Variant:
    """One row: a label, the ICBPL keyword arguments it changes, and values to record."""

    label: str
    kwargs: Mapping[str, Any]
    record: Mapping[str, float] = field(default_factory=dict)


def run_ablation(
    context: BenchContext,
    name: str,
    title: str,
    plan: Plan,
    variants: Sequence[Variant],
    notes: Sequence[str] = (),
) -> ResultLog:
    """Fit every variant on ``plan.dataset`` for every seed (seed-major); returns the log."""
    seeds = context.seeds_for(context.settings.ablation_seeds)
    log = ResultLog(
        context,
        name,
        title,
        ABLATION_COLUMNS,
        intro=[
            f"- ICBPL (one head) with paper defaults (loss weights 8/2/2/1, k=4, d=100, cosine, "
            f"refresh every 30 epochs) and {describe(plan.icbpl)}, except the setting varied; "
            "metrics at the epoch chosen by the label-free score",
            *notes,
        ],
    )
    with log.running():
        try:
            data = context.data(plan.dataset)
        except DatasetUnavailable as err:
            log.skip(plan.dataset, plan.dataset, str(err))
            log.finish()
            return log
        log.group(
            plan.dataset,
            f"{data.title}: N={len(data):,}, D={data.features.shape[1]}, k={data.n_clusters}",
            seeds,
            notes=[*data.notes, context.neighbours(plan.dataset).note()],
        )
        for seed in seeds:
            for v in variants:
                run, _ = fit_icbpl(context, data, {**plan.icbpl, **v.kwargs}, seed)
                log.add(plan.dataset, v.label, seed, {**run.first_head, **v.record})
            log.seed_done(plan.dataset, seed)
        log.finish()
    return log


@register_experiment("neighbours", "Table 4 analogue: k = 0..5 neighbours in the kNN loss")
def run_neighbours(context: BenchContext) -> list[ResultLog]:
    """The k sweep; k = 0 switches the kNN loss off (weight 0)."""
    s = context.settings
    variants = []
    for k in s.neighbour_ks:
        if k == 0:
            weights = (8.0, 2.0, 0.0, 1.0)
            variants.append(Variant("k = 0 (no kNN loss)", {"loss_weights": weights}, {"k": 0}))
        else:
            label = f"k = {k}" + (" (paper)" if k == 4 else "")
            variants.append(Variant(label, {"n_neighbours": k}, {"k": float(k)}))
    note = (
        "- k = 0: the kNN loss weight is 0; the 4-NN list is still given, because the "
        "label-free epoch score (neighbour agreement x size balance) uses it"
    )
    title = "Table 4 analogue: number of neighbours k in the kNN loss"
    return [run_ablation(context, "neighbours", title, s.ablation, variants, [note])]


@register_experiment("distance", "Table 5 analogue: cosine vs euclidean distance in the losses")
def run_distance(context: BenchContext) -> list[ResultLog]:
    """Cosine (paper) against euclidean distance (`ICBPL(distance=...)`)."""
    variants = [
        Variant("cosine (paper)", {"distance": "cosine"}),
        Variant("euclidean", {"distance": "euclidean"}),
    ]
    title = "Table 5 analogue: distance in the augmentation and kNN losses"
    return [run_ablation(context, "distance", title, context.settings.ablation, variants)]


@register_experiment("losses", "Table 6 analogue: subsets of the four losses (zero weights)")
def run_losses(context: BenchContext) -> list[ResultLog]:
    """Loss subsets by zeroing weights of (MMD, augmentation, kNN, min-distance)."""
    variants = [
        Variant(f"{label} ({'/'.join(f'{w:g}' for w in weights)})", {"loss_weights": weights})
        for label, weights in context.settings.loss_subsets
    ]
    note = (
        "- weights are (MMD, augmentation, kNN, min-distance); a zero weight removes that loss; "
        "the 4-NN list is always given (the label-free epoch score uses it)"
    )
    title = "Table 6 analogue: which losses"
    return [run_ablation(context, "losses", title, context.settings.ablation, variants, [note])]


@register_experiment("refresh", "Table 10 analogue: re-mine neighbours every 10/20/30/40 epochs")
def run_refresh(context: BenchContext) -> list[ResultLog]:
    """How often the kNN list is re-mined from the latent space (0: never)."""
    s = context.settings
    variants = [
        Variant(
            "never" if r == 0 else f"every {r} epochs" + (" (paper)" if r == 30 else ""),
            {"refresh_every": r},
            {"refresh_every": float(r)},
        )
        for r in s.refresh_every
    ]
    epochs = int(s.refresh.icbpl.get("epochs", 60))
    note = (
        f"- {epochs} epochs, so 'every r epochs' re-mines the 4-NN list from the latent space "
        f"after epochs r, 2r, ... < {epochs} (never after the last); the label-free score keeps "
        "using the input-space neighbours"
    )
    title = "Table 10 analogue: neighbour refresh interval"
    return [run_ablation(context, "refresh", title, s.refresh, variants, [note])]
