"""The default against k-means for k from 2 to 200 (Tiny-ImageNet-200 val classes, same features).

For each k, k classes of Tiny-ImageNet-200 val are drawn with a fixed seed (50 images each; all
200 classes, 10,000 images, at k = 200) and clustered into k clusters by the k-means peer, the
default's start alone (k-means on neighbour-smoothed features) and ``ICBPL(k)`` with its
defaults, on the same efficientnet_lite2 features (ImageNet **supervised** weights) and one
augmented view. Issue 15 asks that, for every k from 2 to 200, no requested cluster is left
empty and the default is never below k-means.

    python benchmarks/bench_k_sweep.py --cache-dir CACHE [--arrays DIR] [--ks 2,5] [--write-docs]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import bench_defaults as bd
from _common import SHARED_DATA, preamble, write_section
from icbpl import ICBPL, evaluate
from icbpl.core.smoothing import smoothed_kmeans
from icbpl.peers import fit_peer
from icbpl_bench._context import BenchContext
from icbpl_bench._settings import QUICK

KS = (2, 5, 10, 20, 50, 100, 150, 200)


def _row(k: int, x: np.ndarray, y: np.ndarray, v: np.ndarray, seed: int) -> str:
    cells = []
    for fit in (
        lambda: fit_peer("kmeans", x, k, seed=seed).labels,
        lambda: smoothed_kmeans(x, k, seed=seed),
        lambda: ICBPL(k, random_state=seed).fit(x, views=v),
    ):
        t = time.perf_counter()
        out = fit()
        secs = time.perf_counter() - t
        model = out if isinstance(out, ICBPL) else None
        labels = model.labels_ if model is not None else out
        empty = k - len(np.unique(labels))
        cells.append(f"{evaluate(y, labels)['acc']:.3f} ({empty} empty, {secs:.0f} s)")
        if model is not None:
            cells.append(str(model.best_epoch_))
    return f"| {k} | {len(x):,} | " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", type=Path, required=True)
    ap.add_argument("--arrays", type=Path, help="read NAME-{x,y,v}.npy from here, not the cache")
    ap.add_argument("--ks", default=",".join(map(str, KS)))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    bd.ARRAYS = a.arrays
    import torch

    torch.set_num_threads(1)
    ctx = BenchContext(
        settings=QUICK, out_dir=a.cache_dir, cache_dir=a.cache_dir, data_root=SHARED_DATA
    )
    tiny = bd.load_arrays(ctx, "tiny-imagenet-val", 1)
    load = os.getloadavg()
    lines = [
        "## The default against k-means for k = 2 to 200 (Tiny-ImageNet-200 val classes)",
        "",
        preamble(
            f"python benchmarks/bench_k_sweep.py --cache-dir CACHE --ks {a.ks} --seed {a.seed}"
            + (" --arrays DIR" if a.arrays else "")
        ).rstrip("\n"),
        f"- load average at the start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (seconds "
        "are wall time under it)",
        "- features: efficientnet_lite2, ImageNet **supervised** weights; 1 augmented view; k "
        f"classes drawn with seed {a.seed} (the draw is k + 1000 * seed), 50 images each; one "
        "seed per k; ACC (empty clusters, seconds); *epoch*: the epoch the default kept (0: its "
        "warm start)",
        "",
        "| k | images | k-means | smoothed k-means (the start) | ICBPL defaults | epoch |",
        "|---|---|---|---|---|---|",
    ]
    for k in (int(s) for s in a.ks.split(",")):
        x, y, v = tiny if k == 200 else bd.draw_classes(tiny, k, k + 1000 * a.seed)
        lines.append(_row(k, x, y, v, a.seed))
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.write_docs:
        write_section("n-clusters-sweep", text)


if __name__ == "__main__":
    main()
