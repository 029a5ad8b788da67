"""ICBPL vs k-means on the same raw-pixel inputs: scikit-learn digits and MNIST (issue: core).

Both methods see the same pixels; ICBPL also gets V affine views of each image (its augmentation
loss) and mines its k=4 neighbours from the pixels. k-means: scikit-learn, n_init=10, on the raw
pixels. Labels are used only to score. Mean ± std over the seeds, with wall time per run.

    .venv/bin/python benchmarks/bench_core.py                     # digits + MNIST, 4 seeds
    .venv/bin/python benchmarks/bench_core.py --datasets digits --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch
from sklearn.cluster import KMeans

from _common import SHARED_DATA, command_line, mean_std, preamble, write_section
from icbpl import ICBPL, evaluate
from icbpl.data.digits import digits_views, load_digits_data

SETTINGS: dict[str, dict[str, Any]] = {
    # paper defaults (batch 100, Adam 1e-3, weights 8/2/2/1, k=4, d=100, refresh every 30)
    "digits": {"epochs": 60, "batch_size": 100, "views": 4, "view_kw": {}, "heads": 4},
    # MNIST: 70,000 images; batch 256 and 10 epochs keep 4 seeds within minutes on 2 cores
    "mnist": {
        "epochs": 10,
        "batch_size": 256,
        "views": 2,
        "view_kw": {"max_shift": 2.0},
        "heads": 2,
    },
}


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) float32 in [0, 1] and labels."""
    if name == "digits":
        return load_digits_data()
    path = SHARED_DATA / "mnist.npz"
    if not path.is_file():
        raise SystemExit(f"MNIST not found at {path}; see ../shared/data/README.md")
    with np.load(path) as f:
        x = np.concatenate([f["x_train"], f["x_test"]]).astype(np.float32) / 255.0
        y = np.concatenate([f["y_train"], f["y_test"]]).astype(np.int64)
    return x, y


def run(name: str, seeds: list[int]) -> dict[str, Any]:
    """Both methods on one dataset, every seed; returns per-seed metrics and times."""
    images, labels = load(name)
    s = SETTINGS[name]
    x = images.reshape(len(images), -1)
    heads = s["heads"]
    rows: dict[str, list[dict[str, float]]] = {
        "ICBPL (paper: one head)": [],
        f"ICBPL + best of {heads} heads by label-free score": [],
        "k-means": [],
    }
    for seed in seeds:
        t = time.perf_counter()
        views = digits_views(images, n_views=s["views"], seed=seed, **s["view_kw"])
        views = views.reshape(s["views"], len(images), -1)
        model = ICBPL(
            n_clusters=10,
            epochs=s["epochs"],
            batch_size=s["batch_size"],
            n_heads=heads,
            random_state=seed,
        )
        model.fit(x, labels, views=views)
        seconds = time.perf_counter() - t
        best = max(r.metrics["acc"] for r in model.history_ if r.metrics)
        # head 0 is exactly the single-head (paper) model: same seed, same data
        rows["ICBPL (paper: one head)"].append(
            {**model.heads_[0]["metrics"], "seconds": seconds / heads}
        )
        rows[f"ICBPL + best of {heads} heads by label-free score"].append(
            {
                **evaluate(labels, model.labels_),
                "seconds": seconds,
                "best_epoch_acc": best,
                "selected_epoch": model.best_epoch_,
            }
        )
        t = time.perf_counter()
        km = KMeans(10, n_init=10, random_state=seed).fit_predict(x)
        rows["k-means"].append({**evaluate(labels, km), "seconds": time.perf_counter() - t})
        print(name, seed, {k: v[-1] for k, v in rows.items()}, flush=True)
    return {"n": len(x), "settings": s, "rows": rows}


def table(name: str, res: dict[str, Any]) -> str:
    """Markdown table of one dataset."""
    lines = [
        f"**{name}** ({res['n']} images, raw pixels; ICBPL: {res['settings']['epochs']} epochs, "
        f"batch {res['settings']['batch_size']}, "
        f"{res['settings']['views']} affine views per image)\n",
        "| method | ACC | NMI | ARI | seconds / run |",
        "|---|---|---|---|---|",
    ]
    for method, runs in res["rows"].items():
        cells = [mean_std([r[k] for r in runs]) for k in ("acc", "nmi", "ari", "seconds")]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    icbpl = res["rows"][f"ICBPL + best of {res['settings']['heads']} heads by label-free score"]
    gap = [r["best_epoch_acc"] - r["acc"] for r in icbpl]
    lines.append(
        "\nOne-head seconds are the ensemble's time divided by the number of heads."
        f"\nLabel-free epoch selection vs the best-ACC epoch (which needs labels): ACC lower by "
        f"{mean_std(gap)}; selected epochs {[r['selected_epoch'] for r in icbpl]}."
    )
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and write its section of docs/BENCHMARKS.md."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["digits", "mnist"], choices=SETTINGS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = {name: run(name, args.seeds) for name in args.datasets}
    for name, res in results.items():
        body = [
            f"## ICBPL vs k-means on raw pixels: {name} (core)\n",
            preamble(command_line()),
            f"- seeds: {args.seeds}\n",
            table(name, res) + "\n",
        ]
        write_section(f"core-{name}", "\n".join(body))
    print(json.dumps({k: v["rows"] for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
