"""Smoke benchmark of the peer clustering methods on scikit-learn's digits (CPU, ~1-2 minutes).

Raw 8x8 pixels (64-D, standardised per pixel), 1797 images, 10 classes; every peer in
:func:`icbpl.peers.list_peers` with two seeds; prints ACC / NMI / ARI and wall time per run and
the mean per peer. No neighbours or views are passed: SCAN and TEMI mine their own kNN (cosine).

Usage::

    python benchmarks/peers_smoke.py [--seeds 0 1] [--peers kmeans scan] [--threads 1]

Options are each peer's defaults except TEMI, whose paper-sized heads (16 heads, 512 -> 256)
and learning rate need far more steps than fit a CPU smoke run on 1.8k samples; a smaller,
faster-learning configuration (``CPU_OPTIONS``) is used instead and printed with the results.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler

from icbpl.core.metrics import evaluate
from icbpl.peers import fit_peer, list_peers

CPU_OPTIONS: dict[str, dict[str, Any]] = {
    "temi": {
        "n_heads": 4,
        "hidden_dim": 256,
        "bottleneck_dim": 128,
        "epochs": 150,
        "lr": 1e-3,
        "min_lr": 1e-3,
    },
}


def main() -> None:
    """Run the benchmark and print one line per (peer, seed) and one mean line per peer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--peers", nargs="+", default=list_peers(), choices=list_peers())
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    x, y = load_digits(return_X_y=True)
    x = StandardScaler().fit_transform(x).astype(np.float32)
    print(f"digits: {x.shape[0]} samples, {x.shape[1]} features, {len(np.unique(y))} classes")
    print(f"{'peer':8} {'seed':>4} {'ACC':>6} {'NMI':>6} {'ARI':>6} {'time_s':>7}")
    for name in args.peers:
        options = CPU_OPTIONS.get(name, {})
        rows = []
        for seed in args.seeds:
            start = time.perf_counter()
            res = fit_peer(name, x, 10, seed=seed, **options)
            elapsed = time.perf_counter() - start
            m = evaluate(y, res.labels)
            rows.append([m["acc"], m["nmi"], m["ari"], elapsed])
            scores = f"{m['acc']:6.3f} {m['nmi']:6.3f} {m['ari']:6.3f}"
            print(f"{name:8} {seed:>4} {scores} {elapsed:7.1f}")
        mean = np.mean(rows, axis=0)
        print(f"{name:8} {'mean':>4} {mean[0]:6.3f} {mean[1]:6.3f} {mean[2]:6.3f} {mean[3]:7.1f}")
        if options:
            print(f"{'':8} options: {options}")


if __name__ == "__main__":
    main()
