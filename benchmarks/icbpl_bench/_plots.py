"""``plots``: accuracy per epoch with the label-free choice, the k sweep, and a latent-space map.

Three PNG files (matplotlib, Agg backend): ACC/NMI and the label-free score per epoch of one
ICBPL fit, with the epoch chosen without labels and the best epoch by ACC marked; ACC against k
from the ``neighbours`` ablation (run first when its CSV is missing); and a t-SNE map of the fit's
latent vectors coloured by cluster. A CSV holds the per-epoch history behind the first plot.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from icbpl_bench._context import BenchContext
from icbpl_bench._data import DatasetUnavailable
from icbpl_bench._methods import describe, fit_icbpl
from icbpl_bench._registry import register_experiment, run_experiment
from icbpl_bench._results import METRICS, SECONDS, Column, ResultLog

if TYPE_CHECKING:
    from icbpl.model.training import EpochRecord

__all__ = ["plot_history", "plot_k_sweep", "plot_latent", "read_k_sweep", "run_plots"]

logger = logging.getLogger(__name__)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(
            "bench plots need matplotlib: pip install matplotlib (or 'icbpl[bench]')"
        ) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: list[EpochRecord], selected: int, title: str, path: Path) -> Path:
    """ACC and NMI per epoch (left axis), label-free score (right axis); epochs marked."""
    plt = _pyplot()
    epochs = [r.epoch for r in history]
    acc = [(r.metrics or {}).get("acc", np.nan) for r in history]
    nmi = [(r.metrics or {}).get("nmi", np.nan) for r in history]
    best = epochs[int(np.nanargmax(acc))]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, acc, "-o", ms=3, label="ACC")
    ax.plot(epochs, nmi, "-s", ms=3, label="NMI")
    ax.axvline(selected, color="k", ls="--", label=f"chosen without labels (epoch {selected})")
    ax.axvline(best, color="tab:red", ls=":", label=f"best ACC (epoch {best}; needs labels)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ACC / NMI")
    right = ax.twinx()
    right.plot(epochs, [r.score for r in history], color="tab:green", alpha=0.6)
    right.set_ylabel("label-free score (green)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def read_k_sweep(csv_path: Path) -> dict[int, dict[str, list[float]]]:
    """k -> {"acc": [...], "best_epoch_acc": [...]} from a ``neighbours`` ablation CSV."""
    sweep: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with csv_path.open(newline="") as f:
        for row in csv.DictReader(f):
            k = int(float(row["k"]))
            for key in ("acc", "best_epoch_acc"):
                if row.get(key):
                    sweep[k][key].append(float(row[key]))
    return {k: dict(v) for k, v in sorted(sweep.items())}


def plot_k_sweep(sweep: dict[int, dict[str, list[float]]], title: str, path: Path) -> Path:
    """ACC (mean ± std over seeds) against the number of neighbours k."""
    plt = _pyplot()
    ks = list(sweep)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, style in (
        ("acc", "ACC, epoch chosen without labels", "-o"),
        ("best_epoch_acc", "ACC of the best epoch (needs labels)", "--s"),
    ):
        vals = [np.asarray(sweep[k].get(key, [np.nan])) for k in ks]
        ax.errorbar(
            ks,
            [v.mean() for v in vals],
            yerr=[v.std() for v in vals],
            fmt=style,
            capsize=3,
            label=label,
        )
    ax.set_xticks(ks)
    ax.set_xlabel("k (neighbours in the kNN loss; 0 = loss off)")
    ax.set_ylabel("ACC")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latent(
    latent: np.ndarray, clusters: np.ndarray, title: str, path: Path, *, n_points: int, seed: int
) -> Path:
    """t-SNE (PCA initialisation) of up to ``n_points`` latent vectors, coloured by cluster."""
    from sklearn.manifold import TSNE

    plt = _pyplot()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(latent), size=min(n_points, len(latent)), replace=False)
    perplexity = min(30.0, (len(idx) - 1) / 3)
    xy = TSNE(2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(latent[idx])
    fig, ax = plt.subplots(figsize=(6, 6))
    k = int(clusters.max()) + 1
    cmap = "tab10" if k <= 10 else "tab20"
    ax.scatter(xy[:, 0], xy[:, 1], c=clusters[idx] % 20, cmap=cmap, s=4, alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@register_experiment("plots", "ACC per epoch with the label-free choice, k sweep, t-SNE map")
def run_plots(context: BenchContext) -> list[ResultLog]:
    """Fit ICBPL once with the history recorded, plot it, the k sweep and the latent map."""
    s = context.settings
    plan = s.plots
    seed = context.seeds_for(s.ablation_seeds)[0]
    out = context.out_dir
    out.mkdir(parents=True, exist_ok=True)
    log = ResultLog(
        context,
        "plots",
        "Plots: training curve, k sweep, latent space",
        [*METRICS, Column("best_epoch_acc", "best-epoch ACC (labels)"), SECONDS],
        intro=[f"- ICBPL (one head), paper defaults and {describe(plan.icbpl)}, seed {seed}"],
    )
    logs = [log]
    with log.running():
        nb_csv = out / f"{context.stem('neighbours')}.csv"
        if not nb_csv.is_file():
            logger.info("plots: %s missing, running the neighbours ablation first", nb_csv)
            logs = run_experiment("neighbours", context)[0] + logs
        try:
            data = context.data(plan.dataset)
        except DatasetUnavailable as err:
            log.skip(plan.dataset, plan.dataset, str(err))
            log.finish()
            return logs
        log.group(plan.dataset, data.title, (seed,), [*data.notes])
        run, model = fit_icbpl(context, data, plan.icbpl, seed, keep_model=True)
        log.add(plan.dataset, "ICBPL (one head)", seed, run.first_head)
        stem = context.stem("plots")
        hist_csv = out / f"{stem}-history.csv"
        with hist_csv.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["epoch", "loss", "score", "acc", "nmi", "ari", "empty_clusters"])
            for r in run.history:
                m = r.metrics or {}
                w.writerow(
                    [
                        r.epoch,
                        repr(r.losses.get("total", np.nan)),
                        repr(r.score),
                        repr(m.get("acc")),
                        repr(m.get("nmi")),
                        repr(m.get("ari")),
                        sum(1 for c in r.sizes if c == 0),
                    ]
                )
        selected = int(run.first_head["epoch"])
        title = f"ICBPL on {data.title}, seed {seed}"
        png = plot_history(run.history, selected, title, out / f"{stem}-accuracy.png")
        log.add_image(png, f"ACC/NMI per epoch; dashed: epoch chosen without labels ({title})")
        if nb_csv.is_file():
            sweep = read_k_sweep(nb_csv)
            k_title = f"k sweep ({context.stem('neighbours')}.csv)"
            png = plot_k_sweep(sweep, k_title, out / f"{stem}-k-sweep.png")
            log.add_image(png, f"ACC against k, mean ± std over seeds, from {nb_csv.name}")
        if model is not None:
            latent = model.transform(data.features)
            png = plot_latent(
                latent,
                model.labels_,
                f"t-SNE of the latent space, {title}",
                out / f"{stem}-latent-tsne.png",
                n_points=s.tsne_points,
                seed=seed,
            )
            n_shown = min(s.tsne_points, len(data))
            log.add_image(png, f"t-SNE of {n_shown} latent vectors coloured by cluster")
        log.footer = [f"Per-epoch history: `{hist_csv.as_posix()}`."]
        log.seed_done(plan.dataset, seed)
        log.finish()
    return logs
