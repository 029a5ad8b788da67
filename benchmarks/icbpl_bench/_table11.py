"""``table11``: the paper's Table 11 analogue, ICBPL against the peers on the same inputs.

For each dataset and seed: ICBPL as in the paper (head 0 of a fit of ``n_heads`` heads *is* the
one-head model), ICBPL with our additions (the best of those heads by the label-free score, or a
separate fit with the plan's ``ours`` settings, e.g. a warm start), and
the peers k-means, SCAN, TEMI and TURTLE through `icbpl.peers.fit_peer`, all on the same
features, views and neighbours, in the same run. The loop runs seed by seed over all datasets,
so an interrupted run has the first seeds of every dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from icbpl_bench._context import BenchContext
from icbpl_bench._data import DatasetUnavailable
from icbpl_bench._methods import PEER_LABELS, describe, fit_icbpl, run_peer
from icbpl_bench._registry import register_experiment
from icbpl_bench._results import METRICS, SECONDS, Column, ResultLog
from icbpl_bench._settings import Plan

__all__ = ["run_table11"]

logger = logging.getLogger(__name__)

PAPER_ROW = "ICBPL (paper: one head)"


#: Row label of ICBPL with our additions (each dataset's notes say which additions).
OURS_ROW = "ICBPL + ours"


def _ours_fit(ours: Mapping[str, Any], n_heads: int) -> tuple[dict[str, Any], int]:
    """The plan's ``ours`` settings without ``n_heads``, and the head count (its own or the
    settings' ``n_heads``)."""
    kwargs = dict(ours)
    return kwargs, int(kwargs.pop("n_heads", n_heads))


def _ours_note(plan: Plan, n_heads: int) -> str:
    if plan.ours is None:
        return (
            f"ICBPL + ours: the best of that fit's {n_heads} heads by the label-free score "
            "(head 0 is the one-head row)"
        )
    ours, heads = _ours_fit(plan.ours, n_heads)
    pick = f", the best of {heads} heads by the label-free score" if heads > 1 else ", one head"
    return f"ICBPL + ours: a separate fit with {describe(ours)}{pick} (the other settings as above)"


@register_experiment(
    "table11",
    "Table 11 analogue: ICBPL (one head), ICBPL + ours, k-means, SCAN, TEMI, TURTLE",
)
def run_table11(context: BenchContext) -> list[ResultLog]:
    """Run the comparison; returns its (written) result log."""
    s = context.settings
    seeds = context.seeds_for(s.table11_seeds)
    log = ResultLog(
        context,
        "table11",
        "Table 11 analogue: ICBPL vs peers on the same features and neighbours"
        + (f", {context.variant} only (`--only`)" if context.variant else ""),
        [*METRICS, SECONDS, Column("empty", "empty clusters", 1)],
        intro=[
            "- every method clusters the same inputs (features or pixels, views, neighbours) "
            "in the same run; labels only score",
            f"- ICBPL: paper defaults (loss weights 8/2/2/1, k=4 neighbours, latent d=100, "
            f"Adam 1e-3, refresh every 30 epochs) except the epochs and batch below; the epoch "
            f"is chosen by the label-free score, not by ACC as in the paper. "
            f"the paper's row is head 0 of a fit of {s.n_heads} heads from different seeds "
            f"(one-head seconds = fit seconds / {s.n_heads}); '{OURS_ROW}': the additions each "
            "dataset's notes name (the best head by the label-free score, a warm start)",
            "- peers: `icbpl.peers` defaults except the options below (shortened to fit the "
            "time budget; see docs/bench/README.md)",
        ],
    )
    with log.running():
        plans = []
        for plan in s.table11:
            try:
                data = context.data(plan.dataset)
            except DatasetUnavailable as err:
                log.skip(plan.dataset, plan.dataset, str(err))
                continue
            nb = context.neighbours(plan.dataset)
            peers = "; ".join(
                f"{PEER_LABELS.get(p, p)}: {describe(o)}" for p, o in plan.peers.items()
            )
            log.group(
                plan.dataset,
                f"{data.title}: N={len(data):,}, D={data.features.shape[1]}, k={data.n_clusters}",
                seeds,
                notes=[
                    *data.notes,
                    nb.note(),
                    f"ICBPL: {describe(plan.icbpl)}",
                    _ours_note(plan, s.n_heads),
                    f"peers: {peers}",
                ],
            )
            plans.append((plan, data))
        for seed in seeds:
            for plan, data in plans:
                run, _ = fit_icbpl(context, data, plan.icbpl, seed, n_heads=s.n_heads)
                log.add(plan.dataset, PAPER_ROW, seed, run.first_head)
                if plan.ours is not None:
                    kwargs, heads = _ours_fit({**plan.icbpl, **plan.ours}, s.n_heads)
                    ours, _ = fit_icbpl(context, data, kwargs, seed, n_heads=heads)
                    log.add(plan.dataset, OURS_ROW, seed, ours.selected)
                else:
                    log.add(plan.dataset, OURS_ROW, seed, run.selected)
                for peer, options in plan.peers.items():
                    values = run_peer(context, data, peer, options, seed)
                    log.add(plan.dataset, PEER_LABELS.get(peer, peer), seed, values)
                log.seed_done(plan.dataset, seed)
        log.footer = [
            "The ICBPL rows' epoch is chosen without labels; the CSV also has `best_epoch_acc` "
            "(the ACC of the best epoch by ACC, which needs labels: the paper's protocol) and the "
            "selected epoch and label-free score of every run."
        ]
        log.finish()
    return [log]
