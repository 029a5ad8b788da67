"""Choosing k without labels (`icbpl.choose_k`): does it find the true number of classes?

Datasets: scikit-learn digits (1,797 8x8 images), MNIST and Fashion-MNIST (all 70,000 images each,
raw pixels in [0, 1]; choose_k subsamples them), and CIFAR-10 when features are given
(``--cifar-features`` (N, D) .npy, e.g. efficientnet_lite0 features, with ``--cifar-labels`` (N,)
.npy; they are not computed here). Candidates k = 2..50. Labels are used only for the "true k"
column. The first table is the default criterion over the seeds; the second compares every
criterion (one column per criterion: the chosen k per seed).

    .venv/bin/python benchmarks/bench_choose_k.py
    .venv/bin/python benchmarks/bench_choose_k.py --datasets digits mnist --seeds 0 1 2 \\
        --cifar-features feats.npy --cifar-labels labels.npy
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from _common import SHARED_DATA, command_line, preamble, write_section
from icbpl.choose_k import ChooseKResult, choose_k, list_criteria

DATASETS = ("digits", "mnist", "fashion-mnist")


def load(name: str, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) float32 and labels (N,) of one dataset."""
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    if name == "cifar10":
        x = np.load(args.cifar_features).astype(np.float32)
        y = np.load(args.cifar_labels).astype(np.int64).ravel()
        if x.ndim != 2 or len(x) != len(y):
            raise SystemExit(f"--cifar-features {x.shape} and --cifar-labels {y.shape} disagree")
        return x, y
    from icbpl.data import load_dataset

    if not SHARED_DATA.is_dir():
        raise SystemExit(f"no data at {SHARED_DATA}; see ../shared/data/README.md")
    source = load_dataset(name, "all", root=SHARED_DATA)
    images = source.as_array()[..., 0]  # grey images stored as RGB
    assert source.labels is not None
    return images.reshape(len(images), -1).astype(np.float32) / 255.0, source.labels


def run(x: np.ndarray, method: str, seed: int, k_max: int) -> tuple[ChooseKResult, float]:
    t0 = time.perf_counter()
    result = choose_k(x, range(2, k_max + 1), method=method, seed=seed)
    return result, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list_criteria(), choices=list_criteria())
    p.add_argument("--default", default="cut_gap", help="criterion of the first table")
    p.add_argument("--k-max", type=int, default=50)
    p.add_argument("--cifar-features", type=Path)
    p.add_argument("--cifar-labels", type=Path)
    p.add_argument("--cifar-name", default="cifar10", help="row name saying what the features are")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    names = list(args.datasets)
    shown: dict[str, str] = {}
    if args.cifar_features is not None:
        if args.cifar_labels is None:
            raise SystemExit("--cifar-features needs --cifar-labels")
        names.append("cifar10")
        shown["cifar10"] = args.cifar_name
    methods = [args.default, *[m for m in args.methods if m != args.default]]

    main_rows, cmp_rows = [], []
    for name in names:
        x, y = load(name, args)
        true_k = len(np.unique(y))
        label = shown.get(name, name)
        chosen: dict[str, list[str]] = {}
        for method in methods:
            ks, secs = [], []
            for seed in args.seeds:
                result, sec = run(x, method, seed, args.k_max)
                ks.append(result.best_k)
                secs.append(sec)
                top = ", ".join(str(k) for k in result.details["top"])
                print(f"{name} {method} seed {seed}: k={result.best_k} top [{top}] {sec:.1f} s")
                if method == args.default:
                    main_rows.append(
                        f"| {label} | {len(x):,} x {x.shape[1]} | {true_k} | {seed} | "
                        f"{result.best_k} | {top} | {sec:.1f} |"
                    )
            hits = sum(abs(k - true_k) <= 1 for k in ks)
            chosen[method] = [f"{' '.join(map(str, ks))} ({hits}/{len(ks)})"]
            chosen[method].append(f"{np.mean(secs):.0f}")
        cmp_rows.append(
            f"| {label} | {true_k} | "
            + " | ".join(f"{chosen[m][0]}, {chosen[m][1]} s" for m in methods)
            + " |"
        )

    lines = [
        "## Choosing k without labels (`icbpl.choose_k`)",
        "",
        preamble(command_line()),
        f"Candidates k = 2..{args.k_max}; choose_k defaults: subsamples of 3,000 rows, 5 "
        "repeats, PCA-50, L2-normalised, 10-NN graph. MNIST / Fashion-MNIST: raw pixels of all "
        "70,000 images; CIFAR-10: the given features. Labels only give the true k.",
        "",
        f"Default criterion `{args.default}`; top-3 = the three best k by score.",
        "",
        "| dataset | N x D | true k | seed | chosen k | top-3 | seconds |",
        "|---|---|---|---|---|---|---|",
        *main_rows,
        "",
        "Every criterion: chosen k per seed (seeds within +-1 of the true k), mean seconds.",
        "",
        "| dataset | true k | " + " | ".join(f"`{m}`" for m in methods) + " |",
        "|---|---|" + "---|" * len(methods),
        *cmp_rows,
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('choose_k', body)}")


if __name__ == "__main__":
    main()
