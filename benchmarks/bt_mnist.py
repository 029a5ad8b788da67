"""Barlow Twins from scratch on MNIST / Fashion-MNIST (CPU, a few minutes), then clustering.

    python benchmarks/bt_mnist.py --dataset mnist          # or fashion-mnist
    python benchmarks/bt_mnist.py --dataset fashion-mnist --n 4000 --epochs 6 --out results/bt

A small CIFAR ResNet (``resnet_cifar_tiny``, 16x16 input, 64-d features) is pre-trained with
Barlow Twins on ``--n`` training images (digits: crops of 30-100% without flips; clothes: with
flips; brightness/contrast jitter). On the same images' features it then compares

- k-means (scikit-learn, 10 restarts) on the L2-normalised features,
- the ICBPL head trained on those features (``icbpl.deep.finetune`` with ``strategy="frozen"``:
  encoder fixed, augmented views made on the fly),
- with ``--estimator``, the ICBPL estimator on cached features (``icbpl.model.estimator.ICBPL``; its
  60 epochs of batch 100 take several CPU minutes),
- k-means on the features of the randomly initialised encoder (what pre-training adds).

ACC/NMI/ARI are printed (labels are used for evaluation only) and, with ``--out``, written to
``results.json``. Data: ``../shared/data`` (``mnist.npz``, ``fashion-mnist/*.gz``) or ``--data``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from icbpl.core.metrics import evaluate
from icbpl.data import load_dataset
from icbpl.deep.finetune import finetune
from icbpl.deep.pretrain import images_as_tensor, pretrain_barlow_twins
from icbpl.encoders import Encoder, create_encoder
from icbpl.features.augment import BatchAugment

_T0 = time.perf_counter()
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def log(msg: str) -> None:
    """Progress line with elapsed time, flushed at once."""
    print(f"[{time.perf_counter() - _T0:6.1f}s] {msg}", flush=True)


@torch.no_grad()
def features(encoder: Encoder, images: torch.Tensor, batch: int = 512) -> np.ndarray:
    """Eval-mode features of uint8 images already at the encoder's input size."""
    encoder.eval()
    return torch.cat(
        [encoder.encode(images[s : s + batch].float() / 255) for s in range(0, len(images), batch)]
    ).numpy()


def kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Labels of scikit-learn k-means (10 restarts) on the L2-normalised rows of ``x``."""
    from sklearn.cluster import KMeans

    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.asarray(KMeans(k, n_init=10, random_state=seed).fit_predict(xn))


def icbpl_estimator(x: np.ndarray, k: int, seed: int) -> np.ndarray | None:
    """The package's ICBPL estimator on cached features, or ``None`` when not installed."""
    try:
        from icbpl.model.estimator import ICBPL
    except ImportError:
        return None
    return np.asarray(ICBPL(n_clusters=k, random_state=seed).fit(x).labels_)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the files")
    p.add_argument("--n", type=int, default=4000, help="training images used (first n)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--encoder", default="resnet_cifar_tiny")
    p.add_argument("--head-epochs", type=int, default=10)
    p.add_argument("--estimator", action="store_true", help="also fit icbpl.model.estimator.ICBPL")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    p.add_argument("--max-minutes", type=float, default=4.0, help="stop pre-training after this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--write-docs", action="store_true", help="write the bt-<dataset> section of BENCHMARKS.md"
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    source = load_dataset(args.dataset, split="train", root=args.data)
    n = min(args.n, len(source))
    labels = np.asarray(source.labels)[:n]
    encoder = create_encoder(args.encoder, weights="random")
    size = encoder.config.input_size
    images = images_as_tensor(source, size)[:n]
    log(f"{args.dataset}: {n} images at {size}x{size}, encoder {args.encoder}")
    digits = args.dataset == "mnist"
    augment = BatchAugment(
        size,
        scale=(0.3, 1.0),
        flip_p=0.0 if digits else 0.5,
        jitter=(0.4, 0.4, 0.0, 0.0),
        grayscale_p=0.0,
        blur_p=0.0,
    )
    results: dict[str, Any] = {"dataset": args.dataset, "n": n, "encoder": args.encoder}
    random_feats = features(encoder, images)
    results["kmeans_random_encoder"] = evaluate(labels, kmeans(random_feats, 10, args.seed))
    log(f"k-means on random-encoder features: {fmt(results['kmeans_random_encoder'])}")

    t = time.perf_counter()
    bt = pretrain_barlow_twins(
        encoder,
        images,
        epochs=args.epochs,
        batch_size=args.batch_size,
        projector=(512, 512, 512),
        warmup_epochs=1,
        augment=augment,
        device=args.device,
        precision="fp32",
        seed=args.seed,
        max_seconds=args.max_minutes * 60,
    )
    results["barlow_twins"] = {
        "epochs": len(bt.history),
        "seconds": time.perf_counter() - t,
        "seconds_per_epoch": bt.seconds_per_epoch,
        "loss": [h["loss"] for h in bt.history],
    }
    log(
        f"Barlow Twins: {len(bt.history)} epochs, loss {bt.history[0]['loss']:.2f} -> "
        f"{bt.history[-1]['loss']:.2f} ({results['barlow_twins']['seconds']:.0f}s)"
    )
    feats = features(bt.encoder, images)
    results["kmeans"] = evaluate(labels, kmeans(feats, 10, args.seed))
    log(f"k-means on Barlow Twins features: {fmt(results['kmeans'])}")

    t = time.perf_counter()
    head = finetune(
        bt.encoder,
        images,
        10,
        strategy="frozen",
        latent_dim=64,
        hidden=(256,),
        epochs=args.head_epochs,
        batch_size=args.batch_size,
        lr=2e-3,
        augment=augment,
        device=args.device,
        precision="fp32",
        seed=args.seed,
        refresh_every=0,
    )
    results["icbpl_head"] = evaluate(labels, head.labels)
    log(
        f"ICBPL head (frozen encoder, views on the fly): {fmt(results['icbpl_head'])} "
        f"({time.perf_counter() - t:.0f}s)"
    )
    est = icbpl_estimator(feats, 10, args.seed) if args.estimator else None
    if est is not None:
        results["icbpl_estimator"] = evaluate(labels, est)
        log(f"ICBPL estimator on cached features: {fmt(results['icbpl_estimator'])}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        log(f"wrote {args.out / 'results.json'}")
    results["total_seconds"] = time.perf_counter() - _T0
    if args.write_docs:
        write_docs(results, args)
    return results


def write_docs(results: dict[str, Any], args: argparse.Namespace) -> None:
    """Write this run as the ``bt-<dataset>`` section of docs/BENCHMARKS.md."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import command_line, preamble, write_section

    bt = results["barlow_twins"]
    rows = [
        ("k-means, randomly initialised encoder (no pre-training)", "kmeans_random_encoder"),
        ("k-means, Barlow Twins encoder", "kmeans"),
        ("ICBPL head, Barlow Twins encoder (frozen, views on the fly)", "icbpl_head"),
        ("ICBPL estimator, Barlow Twins features (60 epochs)", "icbpl_estimator"),
    ]
    table = ["| method (same images, same encoder) | ACC | NMI | ARI |", "|---|---|---|---|"]
    for name, key in rows:
        if key in results:
            m = results[key]
            table.append(f"| {name} | {m['acc']:.3f} | {m['nmi']:.3f} | {m['ari']:.3f} |")
    body = (
        f"## Barlow Twins from scratch + ICBPL on {args.dataset} (CPU, issue: full method)\n\n"
        + preamble(command_line())
        + f"- data: first {results['n']} training images of {args.dataset}, encoder "
        f"`{args.encoder}` from random init, seed {args.seed}; labels only score\n"
        f"- Barlow Twins: {bt['epochs']} epochs of batch {args.batch_size} in "
        f"{bt['seconds']:.0f} s "
        f"({bt['seconds_per_epoch']:.1f} s/epoch), loss {bt['loss'][0]:.1f} -> {bt['loss'][-1]:.1f}"
        f"; total wall time {results['total_seconds']:.0f} s\n\n" + "\n".join(table) + "\n"
    )
    write_section(f"bt-{args.dataset}", body)
    log("wrote docs/BENCHMARKS.md")


def fmt(m: dict[str, float]) -> str:
    return f"ACC {m['acc']:.4f} NMI {m['nmi']:.4f} ARI {m['ari']:.4f}"


if __name__ == "__main__":
    main()
