"""ICBPL settings on all 60,000 CIFAR-10 images, swept on one GPU (many seeds, parallel workers).

    python benchmarks/gpu_sweep_cifar.py extract --data cifar10-jpg.tar.gz --store /tmp/sweep
    python benchmarks/gpu_sweep_cifar.py list                      # the setting names
    python benchmarks/gpu_sweep_cifar.py fit --store /tmp/sweep --setting base --out OUT
    python benchmarks/gpu_sweep_cifar.py summarise OUT/*.json [--write-docs]

The CPU benchmark (``bench_cifar10.py``) can afford a few ICBPL settings with four seeds each;
the seed spread on CIFAR-10 (0.50-0.67 ACC with one setting) is larger than most settings'
effects, so a setting can only be judged over many seeds. This script does that on a GPU:

1. ``extract``: efficientnet_lite0 (ImageNet **supervised** weights, not self-supervised as in
   the paper) at 160 px, bf16 autocast, features of the 60,000 originals and of ``--views``
   augmented views (:class:`icbpl.features.augment.BatchAugment`, the CPU pipeline's default), plus
   their 20 cosine neighbours on the centred features; stored as ``.npy`` in ``--store``.
2. ``fit``: one named setting (:data:`SETTINGS`, keyword arguments of :class:`icbpl.ICBPL` on
   top of ``bench_cifar10.py``'s: 8 epochs, batch 256, 2 views) with ``--heads`` heads
   (seeds ``--seed + 7919 * h``); per head the label-free score and ACC/NMI/ARI of the epoch
   that score selects, the pick among the heads by that score, and the picked head's history.
   Independent settings run as parallel processes (a head's steps are small: one process
   cannot fill the GPU); ``--heads 1 --seed S`` for S = 1..20 gives many single heads.
3. ``summarise``: heads of a setting pooled over its runs; mean +- std, the expected ACC of the
   label-free pick among 4 heads, and for settings with 16+ heads the pick among 1-16.

The docs' results (docs/bench/gpu_sweep/) came from three commands on one H100, 6 heads per
setting in 10-13 parallel processes, then 20 single heads for ``base`` and ``knn10``.

Labels only score; hyper-parameters picked from this table are tuned on CIFAR-10's labels, which
the table's section says.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpu_protocol import features, labelled_images, log
from icbpl import ICBPL
from icbpl.core.neighbours import mine_neighbours
from icbpl.encoders import create_encoder
from icbpl.features.augment import BatchAugment

BASE: dict[str, Any] = {"epochs": 8, "batch_size": 256}
SETTINGS: dict[str, dict[str, Any]] = {
    "base": {},
    "epochs20": {"epochs": 20},
    "batch100": {"batch_size": 100},
    "lr3e-4": {"lr": 3e-4},
    "lr3e-3": {"lr": 3e-3},
    "mmd4": {"loss_weights": (4.0, 2.0, 2.0, 1.0)},
    "mmd16": {"loss_weights": (16.0, 2.0, 2.0, 1.0)},
    "aug4": {"loss_weights": (8.0, 4.0, 2.0, 1.0)},
    "aug0": {"loss_weights": (8.0, 0.0, 2.0, 1.0)},
    "nb4w": {"loss_weights": (8.0, 2.0, 4.0, 1.0)},
    "nb8w": {"loss_weights": (8.0, 2.0, 8.0, 1.0)},
    "mind0": {"loss_weights": (8.0, 2.0, 2.0, 0.0)},
    "mind3": {"loss_weights": (8.0, 2.0, 2.0, 3.0)},
    "knn10": {"n_neighbours": 10},
    "knn20": {"n_neighbours": 20},
    "knn1": {"n_neighbours": 1},
    "latent32": {"latent_dim": 32},
    "latent256": {"latent_dim": 256},
    "hidden2048": {"hidden": (2048,)},
    "hidden-none": {"hidden": ()},
    "hidden512x2": {"hidden": (512, 512)},
    "refresh4": {"refresh_every": 4},
    "wd1e-4": {"weight_decay": 1e-4},
    "kmeans-init": {"init": "kmeans"},
    "euclidean": {"distance": "euclidean"},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract", help="features, views and neighbours into --store")
    e.add_argument("--data", type=Path, required=True, help="cifar10-jpg.tar.gz or its folder")
    e.add_argument("--store", type=Path, required=True)
    e.add_argument("--weights", default=None, help="efficientnet_lite0 .pth (default: package)")
    e.add_argument("--views", type=int, default=2)
    e.add_argument("--seed", type=int, default=0, help="seed of the views")
    sub.add_parser("list", help="print the setting names")
    f = sub.add_parser("fit", help="one setting, --heads heads")
    f.add_argument("--store", type=Path, required=True)
    f.add_argument("--setting", required=True, choices=sorted(SETTINGS))
    f.add_argument("--heads", type=int, default=8)
    f.add_argument("--seed", type=int, default=0, help="random_state (heads: seed + 7919 h)")
    f.add_argument("--out", type=Path, required=True, help="folder for SETTING[-sSEED].json")
    q = sub.add_parser("peer", help="one peer method at its default options (icbpl.peers)")
    q.add_argument("--store", type=Path, required=True)
    q.add_argument("--name", required=True, choices=("kmeans", "scan", "temi", "turtle"))
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", type=Path, required=True, help="folder for peer-NAME-sSEED.json")
    s = sub.add_parser("summarise", help="table of fit results")
    s.add_argument("results", type=Path, nargs="+")
    s.add_argument("--write-docs", action="store_true", help="into docs/BENCHMARKS.md")
    return p.parse_args(argv)


def extract(args: argparse.Namespace) -> None:
    """Features of originals and views, 20 neighbours, labels, into ``args.store``."""
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    images, labels, _names, _splits = labelled_images(args.data, None, dev)
    encoder = create_encoder("efficientnet_lite0", weights=args.weights, input_size=160).to(dev)
    t = time.perf_counter()
    feats = features(encoder, images, 1024)
    log(f"features {tuple(feats.shape)} in {time.perf_counter() - t:.1f}s")
    augment = BatchAugment(160)
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    views = []
    for v in range(args.views):
        t = time.perf_counter()
        parts = [
            augment(images[s : s + 1024], gen).mul_(255).round_().to(torch.uint8)
            for s in range(0, images.shape[0], 1024)
        ]
        views.append(features(encoder, torch.cat(parts), 1024).cpu().numpy())
        log(f"view {v}: {time.perf_counter() - t:.1f}s")
    nb = mine_neighbours(feats - feats.mean(0), 20, backend="torch")
    args.store.mkdir(parents=True, exist_ok=True)
    np.save(args.store / "features.npy", feats.cpu().numpy())
    np.save(args.store / "views.npy", np.stack(views))
    np.save(args.store / "neighbours.npy", nb.astype(np.int64))
    np.save(args.store / "labels.npy", labels)
    log(f"stored in {args.store}")


def _load_store(store: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features (N, D), views (V, N, D), neighbours (N, 20) and labels written by ``extract``."""
    x, views, nb, y = (
        np.load(store / f"{name}.npy") for name in ("features", "views", "neighbours", "labels")
    )
    return x, views, nb, y


def _save(out_dir: Path, name: str, record: dict[str, Any]) -> None:
    """``record`` plus the device and date, as ``out_dir/name.json``."""
    record["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    record["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(record, indent=1))


def fit(args: argparse.Namespace) -> dict[str, Any]:
    """One setting with ``args.heads`` heads; writes ``OUT/SETTING.json``."""
    x, views, nb, y = _load_store(args.store)
    kw = {**BASE, **SETTINGS[args.setting]}
    k_nb = int(kw.get("n_neighbours", 4))
    t = time.perf_counter()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    est = ICBPL(10, n_heads=args.heads, device=dev, random_state=args.seed, **kw)
    est.fit(x, y, views=views, neighbours=nb[:, :k_nb])
    heads: list[dict[str, Any]] = [
        {
            "seed": h["seed"],
            "epoch": h["best_epoch"],
            "score": h["score"],
            **cast(dict[str, float], h["metrics"]),
        }
        for h in est.heads_
    ]
    pick = int(np.argmax([h["score"] for h in heads]))
    out = {
        "setting": args.setting,
        "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
        "views": int(views.shape[0]),
        "heads": heads,
        "pick": pick,
        "history": [
            {"epoch": r.epoch, "score": r.score, **(r.metrics or {})} for r in est.history_
        ],
        "seconds": time.perf_counter() - t,
    }
    _save(args.out, args.setting if args.seed == 0 else f"{args.setting}-s{args.seed}", out)
    accs = [h["acc"] for h in heads]
    log(
        f"{args.setting}: ACC {np.mean(accs):.3f} +- {np.std(accs):.3f} "
        f"(min {min(accs):.3f}, max {max(accs):.3f}), pick {accs[pick]:.3f}, "
        f"{out['seconds']:.0f}s"
    )
    return out


def peer(args: argparse.Namespace) -> dict[str, Any]:
    """Peer ``args.name`` with its default options on the stored features, neighbours, views."""
    from icbpl.core.metrics import evaluate
    from icbpl.peers import fit_peer, peer_options

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    x, views, nb, y = _load_store(args.store)
    t = time.perf_counter()
    res = fit_peer(
        args.name,
        torch.from_numpy(x).to(dev),
        10,
        neighbours=nb,
        views=torch.from_numpy(views).to(dev),
        seed=args.seed,
        device=dev,
    )
    out = {
        "peer": args.name,
        "seed": args.seed,
        "options": {k: v for k, v in peer_options(args.name).items()},
        **evaluate(y, res.labels),
        "seconds": time.perf_counter() - t,
    }
    _save(args.out, f"peer-{args.name}-s{args.seed}", out)
    log(
        f"{args.name} seed {args.seed}: ACC {out['acc']:.3f} NMI {out['nmi']:.3f} "
        f"ARI {out['ari']:.3f}, {out['seconds']:.0f}s"
    )
    return out


def _pick_of(scores: np.ndarray, accs: np.ndarray, n: int, draws: int = 20000) -> np.ndarray:
    """ACC of the label-free pick (highest score) among ``n`` heads drawn without replacement."""
    rng = np.random.default_rng(0)
    idx = np.argsort(rng.random((draws, len(accs))), axis=1)[:, :n]
    return accs[idx[np.arange(draws), np.argmax(scores[idx], axis=1)]]


def summarise(paths: list[Path], write_docs: bool) -> str:
    """Markdown tables of the fit results (heads of one setting pooled over runs)."""
    groups: dict[str, dict[str, Any]] = {}
    peers: dict[str, list[dict[str, Any]]] = {}
    for p in paths:
        r = json.loads(p.read_text())
        if "peer" in r:
            peers.setdefault(r["peer"], []).append(r)
            continue
        g = groups.setdefault(r["setting"], {"kwargs": r["kwargs"], "heads": [], "runs": []})
        g["heads"] += r["heads"]
        g["runs"].append(r)
    order = sorted(groups, key=lambda s: -float(np.mean([h["acc"] for h in groups[s]["heads"]])))
    lines = [
        "| setting (change to 8 epochs, batch 256, 2 views) | heads | ACC mean +- std | "
        "min / max | pick of 4 heads (label-free), expected ACC | NMI | ARI |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in order:
        g = groups[name]
        acc = np.array([h["acc"] for h in g["heads"]])
        score = np.array([h["score"] for h in g["heads"]])
        change = ", ".join(
            f"{k}={v}" for k, v in g["kwargs"].items() if k not in BASE or BASE[k] != v
        )
        nmi, ari = np.mean([h["nmi"] for h in g["heads"]]), np.mean([h["ari"] for h in g["heads"]])
        lines.append(
            f"| {name}: {change or 'none'} | {len(acc)} | {acc.mean():.3f} +- {acc.std():.3f} | "
            f"{acc.min():.3f} / {acc.max():.3f} | {_pick_of(score, acc, 4).mean():.3f} | "
            f"{nmi:.3f} | {ari:.3f} |"
        )
    table = "\n".join(lines)
    many = [s for s in order if len(groups[s]["heads"]) >= 16]
    best_of = ""
    if many:
        ns = [n for n in (1, 2, 4, 8, 16) if n <= min(len(groups[s]["heads"]) for s in many)]
        rows = [
            "| setting | heads | " + " | ".join(f"pick of {n}" for n in ns) + " |",
            "|---|---|" + "---|" * len(ns),
        ]
        for s in many:
            acc = np.array([h["acc"] for h in groups[s]["heads"]])
            score = np.array([h["score"] for h in groups[s]["heads"]])
            cells = []
            for n in ns:
                picks = _pick_of(score, acc, n)
                cells.append(f"{picks.mean():.3f} +- {picks.std():.3f}")
            corr = float(np.corrcoef(score, acc)[0, 1])
            rows.append(f"| {s} (score-ACC corr. {corr:.2f}) | {len(acc)} | " + " | ".join(cells))
        best_of = "\n".join(row if row.endswith("|") else row + " |" for row in rows)
    peer_table = ""
    if peers:
        rows = [
            "| peer (`icbpl.peers` defaults, with the views) | seeds | ACC | NMI | ARI | seconds |",
            "|---|---|---|---|---|---|",
        ]
        for name, runs in sorted(peers.items(), key=lambda kv: -np.mean([r["acc"] for r in kv[1]])):
            cells = [
                f"{np.mean([r[m] for r in runs]):.3f} +- {np.std([r[m] for r in runs]):.3f}"
                for m in ("acc", "nmi", "ari")
            ]
            seeds = ", ".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
            secs = np.mean([r["seconds"] for r in runs])
            rows.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {secs:.0f} |")
        peer_table = "\n".join(rows)
    extras = [part for part in (best_of, peer_table) if part]
    print("\n\n".join([table, *extras]))
    if write_docs:
        from _common import write_section

        first = next(iter(groups.values()))["runs"][0] if groups else next(iter(peers.values()))[0]
        body = (
            "## CIFAR-10: ICBPL settings over many seeds (GPU sweep)\n\n"
            "- command: `python benchmarks/gpu_sweep_cifar.py extract --data "
            ".gpudata/cifar10-jpg.tar.gz --weights .gpudata/efficientnet-lite0-57934424.pth "
            "--store /tmp/sweep`, then `fit --store /tmp/sweep --setting S --heads 6` per "
            "setting (10-13 parallel processes) and `fit ... --heads 1 --seed 1..20` for two "
            "settings, then `summarise OUT/*.json --write-docs`\n"
            f"- machine: {first['device']}; date {first['date']}\n"
            "- all 60,000 images (train + test), efficientnet_lite0 160 px, ImageNet "
            "**supervised** weights; 2 augmented views; 20 cosine neighbours on the centred "
            "features; each head at the epoch its label-free score selects. 'pick of n': ACC of "
            "the head with the highest label-free score among n heads drawn from the setting's "
            "heads (mean +- std over 20,000 draws). NMI / ARI: means over the heads. Looking at "
            "this table to choose settings is tuning on CIFAR-10's labels.\n\n"
            + table
            + ("\n\nLabel-free pick among many heads:\n\n" + best_of if best_of else "")
            + (
                "\n\nPeers on the same stored features, neighbours and views, at their "
                "`icbpl.peers` default options (full schedules; `peer --name P --seed S`, 8 "
                "parallel processes):\n\n" + peer_table
                if peer_table
                else ""
            )
            + "\n"
        )
        print(f"wrote {write_section('gpu-sweep-cifar', body)}")
    return table


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.cmd == "extract":
        extract(args)
    elif args.cmd == "list":
        print(" ".join(SETTINGS))
    elif args.cmd == "fit":
        fit(args)
    elif args.cmd == "peer":
        peer(args)
    else:
        summarise(args.results, args.write_docs)


if __name__ == "__main__":
    main()
