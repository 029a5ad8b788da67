"""Many clusters: Tiny-ImageNet-200 val (10,000 images, k = 200) with efficientnet_lite0 features.

With the paper's settings ICBPL collapses onto a few dozen PEDCC points when k is large (k = 200
on a 100-d latent sphere). This benchmark puts side by side, in one run, on the same features
and neighbours (the `benchmarks/bench.py` dataset ``tiny-imagenet``, from its feature cache):

- k-means (scikit-learn, 3 inits, as in `icbpl bench table11`);
- ICBPL with the paper's settings (one head, 15 epochs, batch 256, as in table11);
- ICBPL + k-means warm start (``init="kmeans"``, 3 warm-start epochs) with the MMD weight raised
  from 8 to 80 (8 epochs, batch 256): beyond the paper;
- the same warm start with the paper's loss weights (which of the two changes matters).

    .venv/bin/python benchmarks/bench_large_k.py [--seeds 0 1 2 3] [--threads 1]

Writes the ``large-k`` section of docs/BENCHMARKS.md after every seed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import ROOT, SHARED_DATA, command_line, mean_std, preamble, write_section
from icbpl.core.metrics import evaluate
from icbpl.model.estimator import ICBPL
from icbpl.peers import fit_peer
from icbpl_bench._context import BenchContext
from icbpl_bench._data import load_bench_data
from icbpl_bench._settings import FULL

METHODS: dict[str, dict[str, Any] | None] = {
    "k-means (n_init 3)": None,
    "ICBPL, paper settings (15 epochs)": {"epochs": 15, "batch_size": 256},
    "ICBPL + k-means warm start, MMD weight 80 (ours, 8 epochs)": {
        "epochs": 8,
        "batch_size": 256,
        "init": "kmeans",
        "loss_weights": (80.0, 2.0, 2.0, 1.0),
    },
    "ICBPL + k-means warm start, paper weights (8 epochs)": {
        "epochs": 8,
        "batch_size": 256,
        "init": "kmeans",
    },
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="feature cache (benchmarks/bench.py's)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from icbpl_bench._args import default_cache_dir

    ctx = BenchContext(
        settings=FULL,
        out_dir=ROOT / "docs" / "bench",
        cache_dir=args.cache_dir or default_cache_dir(),
        data_root=SHARED_DATA,
    )
    data = load_bench_data("tiny-imagenet", ctx)
    nb = ctx.neighbours("tiny-imagenet")
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for seed in args.seeds:
        for label, kw in METHODS.items():
            t = time.perf_counter()
            if kw is None:
                labels = fit_peer(
                    "kmeans", data.features, data.n_clusters, seed=seed, n_init=3
                ).labels
            else:
                model = ICBPL(data.n_clusters, random_state=seed, **kw)
                model.fit(data.features, neighbours=nb.indices[:, :4])
                labels = model.labels_
            r = {
                **evaluate(data.labels, labels),
                "seconds": time.perf_counter() - t,
                "clusters": float(len(np.unique(labels))),
            }
            rows[label].append(r)
            print(f"seed {seed} | {label} | " + " ".join(f"{k}={v:.4g}" for k, v in r.items()))
        write(args, data.title, len(data), nb.note(), rows, started, done=seed)


def write(
    args: argparse.Namespace,
    title: str,
    n: int,
    nb_note: str,
    rows: dict[str, list[dict[str, float]]],
    started: str,
    done: int,
) -> None:
    finished = done == args.seeds[-1]
    lines = [
        "## Many clusters: Tiny-ImageNet-200 val, k = 200 (ICBPL's k-means warm start)",
        "",
        preamble(command_line()).rstrip(),
        f"- started {started}; seeds {args.seeds}"
        + ("" if finished else f"; **partial**: seeds up to {done} done"),
        f"- data: {title}, N={n:,}, efficientnet_lite0 features at 160 px (ImageNet "
        "**supervised** weights, which saw these classes' superset with labels); labels only score",
        f"- {nb_note}; every ICBPL run uses the first 4",
        "",
        "| method | ACC | NMI | ARI | non-empty clusters | seconds / run | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, rs in rows.items():
        col = {m: [r[m] for r in rs] for m in ("acc", "nmi", "ari", "clusters", "seconds")}
        lines.append(
            f"| {label} | {mean_std(col['acc'])} | {mean_std(col['nmi'])} | "
            f"{mean_std(col['ari'])} | {mean_std(col['clusters'], 1)} | "
            f"{mean_std(col['seconds'], 1)} | {len(rs)} |"
        )
    write_section("large-k", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
