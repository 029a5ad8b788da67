"""``table11``: the paper's Table 11 analogue, ICBPL against the peers on the same inputs.

For each dataset and seed: ICBPL as in the paper (one head), ICBPL with our additions (the best
of ``n_heads`` heads by the label-free score; head 0 of that fit *is* the one-head model), and
the peers k-means, SCAN, TEMI and TURTLE through `icbpl.peers.fit_peer`, all on the same
features, views and neighbours, in the same run. The loop runs seed by seed over all datasets,
so an interrupted run has the first seeds of every dataset.
"""

from __future__ import annotations

import logging

from icbpl.bench._context import BenchContext
from icbpl.bench._data import DatasetUnavailable
from icbpl.bench._methods import PEER_LABELS, describe, fit_icbpl, run_peer
from icbpl.bench._registry import register_experiment
from icbpl.bench._results import METRICS, SECONDS, Column, ResultLog

__all__ = ["run_table11"]

logger = logging.getLogger(__name__)

PAPER_ROW = "ICBPL (paper: one head)"


def additions_row(n_heads: int) -> str:
    """Row label of ICBPL with our additions."""
    return f"ICBPL + ours: best of {n_heads} heads by label-free score"


@register_experiment(
    "table11",
    "Table 11 analogue: ICBPL (one head), ICBPL + best-of-n heads, k-means, SCAN, TEMI, TURTLE",
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
            f"'{additions_row(s.n_heads)}': {s.n_heads} heads from different seeds, the one "
            f"with the best label-free score kept; its head 0 is the one-head row (same fit, so "
            f"one-head seconds = fit seconds / {s.n_heads})",
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
                    *(
                        [
                            f"ICBPL + ours: a separate fit with {describe(plan.ours)} "
                            "(the other settings as above)"
                        ]
                        if plan.ours is not None
                        else []
                    ),
                    f"peers: {peers}",
                ],
            )
            plans.append((plan, data))
        for seed in seeds:
            for plan, data in plans:
                run, _ = fit_icbpl(context, data, plan.icbpl, seed, n_heads=s.n_heads)
                log.add(plan.dataset, PAPER_ROW, seed, run.first_head)
                if plan.ours is not None:
                    ours, _ = fit_icbpl(
                        context, data, {**plan.icbpl, **plan.ours}, seed, n_heads=s.n_heads
                    )
                    log.add(plan.dataset, additions_row(s.n_heads), seed, ours.selected)
                else:
                    log.add(plan.dataset, additions_row(s.n_heads), seed, run.selected)
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
