"""The default pipeline against k-means and the paper's method on the same features.

For each data set: k-means (the `icbpl.peers` k-means peer at its defaults), ``ICBPL()`` with its
defaults (k-means on neighbour-smoothed features as the start, `icbpl.core.smoothing`), the same
start without ICBPL's training (``smoothed k-means``), and the paper's method
(``ICBPL(init="random", patience=0)``), all on the same encoder features (``--encoder``,
efficientnet_lite2 by default as in the CLI: ImageNet **supervised** weights) and the same
augmented view, several seeds, mean ± std.

    python benchmarks/bench_defaults.py --cache-dir CACHE [--seeds 0,1,2] [--write-docs]
    python benchmarks/bench_defaults.py --arrays DIR ...   # features saved as NAME-{x,y,v}.npy

Small real folders are Tiny-ImageNet-200 val classes drawn with a fixed seed (50 images each);
the whole Tiny-ImageNet-200 val set is the large-k case (k = 200).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from icbpl import ICBPL, evaluate
from icbpl.core.smoothing import smoothed_kmeans
from icbpl.peers import fit_peer
from icbpl_bench._context import BenchContext
from icbpl_bench._data import encode, load_image_set
from icbpl_bench._settings import QUICK

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ARRAYS: Path | None = None
ENCODER = "efficientnet_lite2"


def load_arrays(
    ctx: BenchContext, name: str, views: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and views of image set ``name`` (``--arrays`` files, else the cache)."""
    if ARRAYS is not None:  # the same extraction, saved earlier as plain arrays
        return tuple(np.load(ARRAYS / f"{name}-{part}.npy") for part in "xyv")  # type: ignore[return-value]
    source = load_image_set(name, ctx)
    fs = encode(ctx, source, ENCODER, views=views)
    if fs.views is None:
        raise RuntimeError(f"{name}: the feature cache returned no views")
    return np.asarray(fs.features), np.asarray(source.labels), np.asarray(fs.views)


def draw_classes(data: tuple[np.ndarray, ...], n_classes: int, seed: int) -> tuple[np.ndarray, ...]:
    """``n_classes`` classes drawn with ``seed``, 50 images each: features, labels 0..n-1, views."""
    x, y, v = data
    rng = np.random.default_rng(seed)
    cls = np.sort(rng.choice(np.unique(y), n_classes, replace=False))
    idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), 50, False) for c in cls]))
    return x[idx], np.searchsorted(cls, y[idx]), v[:, idx]


def _datasets(ctx: BenchContext, only: set[str] | None) -> dict[str, tuple[np.ndarray, ...]]:
    from sklearn.datasets import load_digits

    out: dict[str, tuple[np.ndarray, ...]] = {}
    dx, dy = load_digits(return_X_y=True)
    out["digits (pixels, no views)"] = (dx.astype(np.float32), dy, None)  # type: ignore[assignment]
    tiny = load_arrays(ctx, "tiny-imagenet-val", 1)
    for n_classes, seed in ((12, 0), (12, 1), (12, 2), (20, 3), (50, 4)):
        out[f"Tiny-ImageNet folder: {n_classes} classes x 50 (draw {seed})"] = draw_classes(
            tiny, n_classes, seed
        )
    out["Tiny-ImageNet-200 val, 10,000 (k = 200)"] = tiny
    out["CIFAR-10 (JPEG copy) test, 10,000"] = load_arrays(ctx, "cifar10-test", 1)
    return {k: v for k, v in out.items() if only is None or any(o in k for o in only)}


METHODS = {
    "k-means (peer defaults)": lambda x, v, k, s: fit_peer("kmeans", x, k, seed=s).labels,
    "smoothed k-means (the kmeans start)": lambda x, v, k, s: smoothed_kmeans(x, k, seed=s),
    "ICBPL init=kmeans (one head from that start)": lambda x, v, k, s: (
        ICBPL(k, init="kmeans", random_state=s).fit(x, views=v).labels_
    ),
    "**ICBPL defaults** (init=auto)": lambda x, v, k, s: (
        ICBPL(k, random_state=s).fit(x, views=v).labels_
    ),
    "paper ICBPL (init=random, patience=0)": lambda x, v, k, s: (
        ICBPL(k, init="random", patience=0, random_state=s).fit(x, views=v).labels_
    ),
}


def main() -> None:
    global ARRAYS, ENCODER
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", type=Path, required=True)
    ap.add_argument("--arrays", type=Path, help="read NAME-{x,y,v}.npy from here, not the cache")
    ap.add_argument("--encoder", default=ENCODER, help="registry name (default: the CLI's)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--only", nargs="*", help="substrings of the data set names to run")
    ap.add_argument("--skip", nargs="*", default=[], help="substrings of method names to skip")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    ARRAYS, ENCODER = a.arrays, a.encoder
    import torch

    torch.set_num_threads(1)
    seeds = [int(s) for s in a.seeds.split(",")]
    ctx = BenchContext(settings=QUICK, out_dir=a.cache_dir, cache_dir=a.cache_dir, data_root=DATA)
    load = os.getloadavg()
    lines = [
        "## The default pipeline vs k-means and the paper's ICBPL (same features)",
        "",
        f"- command: `python benchmarks/bench_defaults.py --cache-dir CACHE --encoder {a.encoder} "
        f"--seeds {a.seeds}"
        + (f" --only {' '.join(a.only)}" if a.only else "")
        + (
            " --arrays DIR`: features and views from `icbpl_bench.encode` (the feature "
            "cache, same encoder) saved as plain arrays"
            if a.arrays
            else "`"
        ),
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch threads 1; date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- load average at the start: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (2 cores "
        "shared with other jobs: seconds are wall time under that load)",
        f"- features: {a.encoder}, ImageNet **supervised** weights (not self-supervised as in "
        "the paper); 1 augmented view per image (the CLI's default); digits: raw pixels, no views",
        "",
        "| data | method | ACC mean ± std | per seed | NMI | empty clusters (max) | s/run |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (x, y, v) in _datasets(ctx, set(a.only) if a.only else None).items():
        k = int(y.max()) + 1
        for method, fn in METHODS.items():
            if any(s in method for s in a.skip):
                continue
            accs, nmis, empty, secs = [], [], 0, []
            for s in seeds:
                t = time.perf_counter()
                labels = fn(x, v, k, s)
                secs.append(time.perf_counter() - t)
                m = evaluate(y, labels)
                accs.append(m["acc"])
                nmis.append(m["nmi"])
                empty = max(empty, k - len(np.unique(labels)))
            row = (
                f"| {name} | {method} | {np.mean(accs):.3f} ± {np.std(accs):.3f} | "
                f"{', '.join(f'{q:.3f}' for q in accs)} | {np.mean(nmis):.3f} | {empty} | "
                f"{np.mean(secs):.0f} |"
            )
            print(row, flush=True)
            lines.append(row)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.write_docs:
        from icbpl_bench._docs import write_section

        write_section(ROOT / "docs" / "BENCHMARKS.md", "defaults-quality", text)


if __name__ == "__main__":
    main()
