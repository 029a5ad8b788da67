"""One quality table: the default pipeline, the paper's ICBPL, k-means and the peers at their
authors' schedules (and tuned variants), with the supervised linear probe as the ceiling.

Every method gets the same features, the same augmented view and the same 20 cosine neighbours
(mined once per data set); labels only score, except in the linear-probe row, which is trained
with labels (2-fold cross-validated predictions) and marks the ceiling of any head.

    python benchmarks/bench_quality.py --arrays DIR [--data cifar10-test,digits] [--seeds 0,1]
        [--methods ...] [--write-docs]

``--arrays DIR`` reads features saved as ``NAME-{x,y,v}.npy`` (x: (N, D), y: (N,), v: (V, N, D)),
e.g. by ``icbpl.features.extract_features``; ``digits`` needs none (raw pixels, random affine
views from `icbpl.data.digits`).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from icbpl import ICBPL, evaluate
from icbpl.core.neighbours import mine_neighbours
from icbpl.peers import fit_peer, schedule_label
from icbpl_bench._docs import machine

Data = tuple[np.ndarray, np.ndarray, np.ndarray | None]
Method = Callable[[Data, np.ndarray, int, int], np.ndarray]


def _peer(name: str, schedule: str) -> Method:
    def run(data: Data, nb: np.ndarray, k: int, seed: int) -> np.ndarray:
        x, _, v = data
        return fit_peer(name, x, k, neighbours=nb, views=v, seed=seed, schedule=schedule).labels

    return run


def _icbpl(**params: Any) -> Method:
    def run(data: Data, nb: np.ndarray, k: int, seed: int) -> np.ndarray:
        x, _, v = data
        model = ICBPL(k, random_state=seed, **params)
        return model.fit(x, views=v, neighbours=nb).labels_

    return run


def _probe(data: Data, nb: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, y, _ = data
    z = x - x.mean(0)
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    folds = StratifiedKFold(2, shuffle=True, random_state=seed)
    return cross_val_predict(LogisticRegression(max_iter=500), z, y, cv=folds)


METHODS: dict[str, tuple[str, Method]] = {
    "icbpl": ("**icbpl default** (`ICBPL(k)`)", _icbpl()),
    "paper": ("paper's ICBPL (`init='random'`, all 60 epochs)", _icbpl(init="random", patience=0)),
    "kmeans": ("k-means, " + schedule_label("kmeans"), _peer("kmeans", "official")),
    "scan": ("SCAN, " + schedule_label("scan"), _peer("scan", "official")),
    "scan-tuned": ("SCAN, " + schedule_label("scan", "tuned"), _peer("scan", "tuned")),
    "turtle": ("TURTLE, " + schedule_label("turtle"), _peer("turtle", "official")),
    "temi": ("TEMI, " + schedule_label("temi"), _peer("temi", "official")),
    "probe": ("linear probe (**uses labels**: the ceiling)", _probe),
}


def _load(arrays: Path | None, name: str) -> Data:
    if name == "digits":
        from sklearn.datasets import load_digits

        from icbpl.data.digits import digits_views

        x, y = load_digits(return_X_y=True)
        x = x.astype(np.float32)
        views = digits_views(x.reshape(-1, 8, 8), 1, seed=0).reshape(1, len(x), -1)
        return x, y, views
    if arrays is None:
        raise SystemExit(f"{name}: pass --arrays DIR holding {name}-{{x,y,v}}.npy")
    x, y = np.load(arrays / f"{name}-x.npy"), np.load(arrays / f"{name}-y.npy")
    v_file = arrays / f"{name}-v.npy"
    return x, y, (np.load(v_file) if v_file.exists() else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrays", type=Path)
    ap.add_argument("--data", default="digits,cifar10-test")
    ap.add_argument("--features", default="efficientnet_lite2 (ImageNet **supervised** weights)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    seeds = [int(s) for s in a.seeds.split(",")]
    load = os.getloadavg()
    lines = [
        "## One quality table: the default, the paper, k-means and the peers (issue 15)",
        "",
        f"- command: `python benchmarks/bench_quality.py --data {a.data} --seeds {a.seeds} "
        f"--methods {a.methods} --arrays DIR`",
        f"- machine: {machine()}; date "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load average at the start "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (seconds are wall time under that load)",
        f"- features: {a.features}; digits: raw pixels. Every method gets the same features, "
        "1 augmented view and 20 cosine neighbours; the schedule each peer ran is in its row",
        "",
        "| data | method | ACC mean ± std | per seed | NMI | ARI | empty (max) | s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in a.data.split(","):
        data = _load(a.arrays, name)
        x, y, _ = data
        k = int(y.max()) + 1
        nb = mine_neighbours(np.asarray(x, np.float32), 20)
        for key in a.methods.split(","):
            title, fn = METHODS[key]
            scores, secs, empty = [], [], 0
            for s in seeds:
                t = time.perf_counter()
                labels = fn(data, nb, k, s)
                secs.append(time.perf_counter() - t)
                scores.append(evaluate(y, labels))
                empty = max(empty, k - len(np.unique(labels)))
            acc = [m["acc"] for m in scores]
            row = (
                f"| {name} (N={len(y):,}, k={k}) | {title} | {np.mean(acc):.3f} ± "
                f"{np.std(acc):.3f} | {', '.join(f'{q:.3f}' for q in acc)} | "
                f"{np.mean([m['nmi'] for m in scores]):.3f} | "
                f"{np.mean([m['ari'] for m in scores]):.3f} | {empty} | {np.mean(secs):.0f} |"
            )
            print(row, flush=True)
            lines.append(row)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.write_docs:
        from _common import write_section

        write_section("quality", text)


if __name__ == "__main__":
    main()
