"""One-command GPU protocol: Barlow Twins from scratch on CIFAR-10, then ICBPL fine-tuning.

    python benchmarks/gpu_protocol.py --data ../shared/data/cifar10-jpg.tar.gz --out results/gpu

On one H100 (about 20 minutes with the defaults):

1. read the JPEG copy of CIFAR-10 (a ``.tar.gz`` or a folder holding ``train/<class>/*.jpg`` and
   ``test/<class>/*.jpg``) and decode all 60,000 images to one uint8 tensor on the GPU
   (``torchvision.io.decode_jpeg(device="cuda")``; CPU decoding is the fallback);
2. Barlow Twins from scratch: CIFAR ResNet-18, projector 2048-2048-2048, LARS, batch 1024,
   augmentations made on the GPU in batches, bf16 autocast, channels-last; the number of epochs
   is fitted to ``--bt-minutes`` from a short timing probe;
3. k-means on the pre-trained features (torch, on the GPU) as the reference point;
4. ICBPL fine-tuning with ``last2`` and ``all`` for ``--ft-minutes`` each (neighbours by a
   block-wise torch matmul + top-k on the GPU: faiss is not needed).

Clusters are evaluated on all 60,000 images (train + test; the labels are used for evaluation
only). ACC/NMI/ARI, seconds per epoch and peak GPU memory are written to ``OUT/results.json`` and
``OUT/results.md``. ``--smoke`` runs the same code with tiny settings on the CPU (< 1 minute).

Where one command may run for at most N minutes, pass ``--time-limit-minutes N``: the script
then stops cleanly before the limit (exit code 3; Barlow Twins and ICBPL checkpoint every epoch)
and the same command, run again with the same ``--out``, continues where it stopped.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import re
import sys
import tarfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from icbpl.core.metrics import evaluate
from icbpl.deep.finetune import finetune
from icbpl.deep.pretrain import pretrain_barlow_twins
from icbpl.encoders import create_encoder

_T0 = time.perf_counter()
_MEMBER = re.compile(r"(?:^|/)(train|test)/([^/]+)/[^/]+\.(?:jpe?g|png)$", re.IGNORECASE)


def log(msg: str) -> None:
    """Progress line with elapsed time, flushed at once."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------- data


def read_jpegs(path: Path, per_class: int | None) -> tuple[list[bytes], list[str], list[str]]:
    """JPEG bytes, class names and splits of ``split/class/file`` entries (sorted by name)."""
    entries: list[tuple[str, bytes]] = []
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            rel = f.relative_to(path).as_posix()
            if f.is_file() and _MEMBER.search(rel):
                entries.append((rel, f.read_bytes()))
    else:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isfile() and _MEMBER.search(member.name):
                    fh = tar.extractfile(member)
                    if fh is not None:
                        entries.append((member.name, fh.read()))
    entries.sort()
    blobs, classes, splits = [], [], []
    seen: dict[tuple[str, str], int] = {}
    for name, data in entries:
        m = _MEMBER.search(name)
        assert m is not None
        split, cls = m.group(1).lower(), m.group(2)
        if per_class is not None:
            seen[split, cls] = seen.get((split, cls), 0) + 1
            if seen[split, cls] > per_class:
                continue
        blobs.append(data)
        classes.append(cls)
        splits.append(split)
    if not blobs:
        raise SystemExit(f"no train/<class>/*.jpg or test/<class>/*.jpg images found in {path}")
    return blobs, classes, splits


def labelled_images(
    path: Path, per_class: int | None, device: torch.device
) -> tuple[torch.Tensor, np.ndarray, list[str], list[str]]:
    """Decoded images ``(N, 3, H, W)`` uint8 on ``device``, class indices (sorted class names),
    the names and each image's split, from :func:`read_jpegs` and :func:`decode`."""
    blobs, classes, splits = read_jpegs(path, per_class)
    names = sorted(set(classes))
    labels = np.array([names.index(c) for c in classes], dtype=np.int64)
    return decode(blobs, device), labels, names, splits


def decode(blobs: list[bytes], device: torch.device, chunk: int = 4096) -> torch.Tensor:
    """Decode JPEGs to one ``(N, 3, H, W)`` uint8 tensor on ``device`` (GPU decoder on CUDA).

    torchvision >= 0.29 marks its decoders deprecated in favour of TorchCodec; they still work,
    and TorchCodec is not installed on the GPU machine, so the warning is silenced here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        return _decode(blobs, device, chunk)


def _decode(blobs: list[bytes], device: torch.device, chunk: int) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg

    datas = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    parts: list[torch.Tensor] = []
    if device.type == "cuda":
        try:
            for s in range(0, len(datas), chunk):
                imgs = decode_jpeg(datas[s : s + chunk], mode=ImageReadMode.RGB, device=device)
                parts.append(torch.stack(imgs))
            return torch.cat(parts)
        except (RuntimeError, TypeError) as err:  # an old torchvision or no nvjpeg
            log(f"GPU JPEG decoding failed ({err}); decoding on the CPU")
            parts = []
    try:
        for s in range(0, len(datas), chunk):
            parts.append(torch.stack(decode_jpeg(datas[s : s + chunk], mode=ImageReadMode.RGB)))
    except (RuntimeError, TypeError):
        from PIL import Image

        parts = [
            torch.from_numpy(np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))).permute(2, 0, 1)[
                None
            ]
            for b in blobs
        ]
    return torch.cat(parts).to(device)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def features(encoder: torch.nn.Module, images: torch.Tensor, batch: int) -> torch.Tensor:
    """Encoder features of uint8 images, in eval mode, bf16 autocast on CUDA, float32 out."""
    encoder.eval()
    out = []
    dev = images.device
    size = encoder.config.input_size  # type: ignore[union-attr]
    for s in range(0, images.shape[0], batch):
        x = images[s : s + batch].float().div_(255)
        if x.shape[-1] != size:
            x = torch.nn.functional.interpolate(
                x, size=(size, size), mode="bilinear", antialias=True
            )
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            out.append(encoder.encode(x).float())  # type: ignore[operator]
    return torch.cat(out)


def kmeans(x: torch.Tensor, k: int, n_init: int = 5, iters: int = 100, seed: int = 0) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding on the rows of ``x`` (torch, on ``x``'s device);
    the run with the lowest inertia wins."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    best, best_inertia = None, float("inf")
    sq = (x * x).sum(1)
    for _ in range(n_init):
        first = torch.randint(x.shape[0], (1,), generator=gen, device=x.device)
        centres = x[first]
        d2 = (sq - 2 * x @ centres.T + (centres * centres).sum(1)).clamp_min(0).min(1).values
        for _ in range(1, k):
            nxt = torch.multinomial(d2 / d2.sum(), 1, generator=gen)
            centres = torch.cat([centres, x[nxt]])
            d2 = torch.minimum(d2, ((x - x[nxt]) ** 2).sum(1))
        for _ in range(iters):
            dist = sq[:, None] - 2 * x @ centres.T + (centres * centres).sum(1)[None]
            assign = dist.argmin(1)
            sums = torch.zeros_like(centres).index_add_(0, assign, x)
            counts = torch.bincount(assign, minlength=k)[:, None]
            new = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
            if torch.allclose(new, centres, atol=1e-6):
                break
            centres = new
        dist = sq[:, None] - 2 * x @ centres.T + (centres * centres).sum(1)[None]
        inertia = float(dist.min(1).values.sum())
        if inertia < best_inertia:
            best, best_inertia = dist.argmin(1), inertia
    assert best is not None
    return best.cpu().numpy()


# --------------------------------------------------------------------------- timing


def fit_epochs(budget_s: float, probe: Callable[[int], float], n: int, probe_n: int) -> int:
    """Epochs that fit ``budget_s``: ``probe(probe_n)`` returns seconds per epoch on ``probe_n``
    samples (after warm-up), scaled to ``n``."""
    t0 = time.perf_counter()
    per_epoch = probe(probe_n) * n / probe_n
    left = budget_s - (time.perf_counter() - t0)
    epochs = max(1, int(left / per_epoch))
    log(f"  timing probe: ~{per_epoch:.1f}s per epoch -> {epochs} epochs in {left:.0f}s")
    return epochs


def peak_gb(device: torch.device) -> float:
    if device.type != "cuda":
        return 0.0
    return torch.cuda.max_memory_allocated(device) / 2**30


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="cifar10-jpg.tar.gz or its folder")
    p.add_argument("--out", type=Path, required=True, help="output folder (results.json/.md)")
    p.add_argument("--device", default="auto")
    p.add_argument("--smoke", action="store_true", help="tiny settings, CPU-friendly (< 1 min)")
    p.add_argument("--bt-minutes", type=float, default=11.0)
    p.add_argument("--ft-minutes", type=float, default=3.0)
    p.add_argument("--bt-batch", type=int, default=1024)
    p.add_argument("--ft-batch", type=int, default=512)
    p.add_argument("--bt-lr", type=float, default=None, help="LARS lr (default 0.3 x batch/256)")
    p.add_argument("--strategies", default="last2,all")
    p.add_argument("--refresh-every", type=int, default=10, help="neighbour re-mining period")
    p.add_argument("--encoder", default="resnet18_cifar")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--time-limit-minutes",
        type=float,
        default=None,
        help="stop cleanly before this wall time; the same command continues the run",
    )
    return p.parse_args(argv)


class _OutOfTime(Exception):
    """Raised when the next stage would not finish before ``--time-limit-minutes``."""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run (or continue) the protocol; ``results["complete"]`` says whether every stage is done."""
    global _T0
    _T0 = time.perf_counter()
    args = parse_args(argv)
    if args.smoke:
        dev = torch.device("cpu" if args.device == "auto" else args.device)
        torch.set_num_threads(min(2, torch.get_num_threads()))
        per_class, enc_name, proj = 6, "resnet_cifar_tiny", (64, 64)
        bt_batch, ft_batch = 32, 32
    else:
        from icbpl.util.device import resolve_device

        dev = resolve_device(args.device)
        per_class, enc_name, proj = None, args.encoder, (2048, 2048, 2048)
        bt_batch, ft_batch = args.bt_batch, args.ft_batch
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) for k, v in vars(args).items() if k not in ("time_limit_minutes", "out")}
    progress_path = args.out / "progress.json"
    progress: dict[str, Any] = {"settings": settings, "plan": {}, "stages": {}, "seconds": 0.0}
    if progress_path.is_file():
        saved = json.loads(progress_path.read_text())
        if saved["settings"] != settings:
            raise SystemExit(
                f"{args.out} holds a run with other settings ({saved['settings']}); use another "
                "--out or delete it"
            )
        progress = saved
        log(f"continuing the run in {args.out}: done {sorted(progress['stages']) or 'nothing'}")
    deadline = None if args.time_limit_minutes is None else _T0 + args.time_limit_minutes * 60
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU {platform.machine()}"
    info: dict[str, Any] = {
        "device": name,
        "torch": torch.__version__,
        "smoke": args.smoke,
        "dataset": "CIFAR-10 (JPEG copy), train + test",
    }
    log(f"device {dev} ({info['device']}), torch {torch.__version__}")

    t = time.perf_counter()
    images, labels, names, splits = labelled_images(args.data, per_class, dev)
    info["n_images"] = int(images.shape[0])
    info["decode_seconds"] = time.perf_counter() - t
    log(
        f"decoded {images.shape[0]} images {tuple(images.shape[1:])} to {images.device} "
        f"in {info['decode_seconds']:.1f}s ({sum(s == 'test' for s in splits)} test)"
    )
    n, k = images.shape[0], len(names)
    if args.smoke:
        bt_batch = ft_batch = min(bt_batch, n)
    stages: dict[str, Any] = progress["stages"]
    plan: dict[str, Any] = progress["plan"]

    def save() -> None:
        progress["seconds"] = progress.get("seconds", 0.0) + time.perf_counter() - _T0
        progress_path.write_text(json.dumps(progress, indent=1))

    try:
        encoder = _barlow_twins(
            args, dev, images, labels, k, enc_name, proj, bt_batch, plan, stages, deadline
        )
        for strategy in [s.strip() for s in args.strategies.split(",") if s.strip()]:
            if f"icbpl_{strategy}" not in stages:
                _icbpl(
                    args,
                    dev,
                    images,
                    labels,
                    k,
                    encoder,
                    strategy,
                    ft_batch,
                    plan,
                    stages,
                    deadline,
                )
    except _OutOfTime as stop:
        save()
        log(f"stopping: {stop}; run the same command again to continue")
        return {"info": info, "stages": stages, "complete": False}
    save()
    info["total_seconds"] = progress["seconds"]
    results = {"info": info, "stages": stages, "complete": True}
    write(args.out, results)
    log(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return results


def _left(deadline: float | None) -> float:
    return float("inf") if deadline is None else deadline - time.perf_counter()


def _barlow_twins(
    args: argparse.Namespace,
    dev: torch.device,
    images: torch.Tensor,
    labels: np.ndarray,
    k: int,
    enc_name: str,
    proj: tuple[int, ...],
    batch: int,
    plan: dict[str, Any],
    stages: dict[str, Any],
    deadline: float | None,
) -> torch.nn.Module:
    """Pre-train (or continue, or reload) the Barlow Twins encoder; k-means on its features."""
    out = args.out / "barlow_twins"
    if "barlow_twins" in stages:
        log("Barlow Twins: done in an earlier invocation, reloading its weights")
        return create_encoder(enc_name, weights=str(out / "encoder.safetensors")).to(dev)
    n = images.shape[0]
    torch.manual_seed(args.seed)
    encoder = create_encoder(enc_name, weights="random")
    kw: dict[str, Any] = {
        "batch_size": batch,
        "projector": proj,
        "optimizer": "lars",
        "lr": args.bt_lr,
        "loss_scale": 0.1,
        "device": dev,
        "seed": args.seed,
    }
    if "bt_epochs" not in plan:
        if args.smoke:
            plan["bt_epochs"] = 2
        else:
            probe_n = min(n, max(4 * batch, n // 5))

            def probe(m: int) -> float:
                r = pretrain_barlow_twins(encoder, images[:m], epochs=2, warmup_epochs=0, **kw)
                return float(r.history[-1]["seconds"])

            log("Barlow Twins: timing probe")
            plan["bt_epochs"] = fit_epochs(args.bt_minutes * 60, probe, n, probe_n)
    epochs = int(plan["bt_epochs"])
    warmup = max(1, min(10, epochs // 10))
    log(f"Barlow Twins: {enc_name}, {epochs} epochs, batch {batch}, warm-up {warmup}")
    budget = None if args.smoke else args.bt_minutes * 60 * 1.15
    if deadline is not None:
        budget = min(budget or float("inf"), _left(deadline) - 90.0)
        if budget <= 0:
            raise _OutOfTime("no time left for Barlow Twins")
    reset_peak(dev)
    bt = pretrain_barlow_twins(
        encoder,
        images,
        epochs=epochs,
        warmup_epochs=warmup,
        out_dir=out,
        resume=True,
        max_seconds=budget,
        **kw,
    )
    for h in bt.history[:: max(1, len(bt.history) // 10)]:
        log(f"  epoch {h['epoch'] + 1}: loss {h['loss']:.3f} ({h['seconds']:.1f}s)")
    if len(bt.history) < epochs:
        raise _OutOfTime(f"Barlow Twins reached epoch {len(bt.history)} of {epochs}")
    feats = features(bt.encoder, images, 1024)
    km = evaluate(labels, kmeans(torch.nn.functional.normalize(feats, dim=1), k, seed=args.seed))
    stages["barlow_twins"] = {
        "epochs": len(bt.history),
        "batch_size": batch,
        "seconds": sum(h["seconds"] for h in bt.history),
        "seconds_per_epoch": bt.seconds_per_epoch,
        "peak_gpu_gb": peak_gb(dev),
        "final_loss": bt.history[-1]["loss"],
        "weights": str(bt.weights_path),
    }
    stages["kmeans_on_bt_features"] = km
    log(f"k-means on Barlow Twins features: {fmt(km)}")
    return bt.encoder


def _icbpl(
    args: argparse.Namespace,
    dev: torch.device,
    images: torch.Tensor,
    labels: np.ndarray,
    k: int,
    encoder: torch.nn.Module,
    strategy: str,
    batch: int,
    plan: dict[str, Any],
    stages: dict[str, Any],
    deadline: float | None,
) -> None:
    """ICBPL fine-tuning with ``strategy``, resumable from its per-epoch checkpoints."""
    n = images.shape[0]
    enc_lr = 1e-4 if strategy == "last2" else 3e-5
    kw: dict[str, Any] = {
        "strategy": strategy,
        "latent_dim": 100,
        "hidden": (512,),
        "batch_size": batch,
        "lr": 1e-3,
        "encoder_lr": enc_lr,
        "device": dev,
        "seed": args.seed,
        "extract_batch_size": 1024,
    }
    key = f"ft_{strategy}"
    if key not in plan:
        if args.smoke:
            plan[key] = {"epochs": 1, "seconds_per_epoch": 0.0}
        else:
            probe_n = min(n, max(4 * batch, n // 5))
            per_epoch: list[float] = []

            def probe(m: int) -> float:
                r = finetune(encoder, images[:m], k, epochs=2, refresh_every=0, **kw)
                per_epoch.append(float(r.history[1]["seconds"]) * n / m)
                return float(r.history[1]["seconds"])

            log(f"ICBPL {strategy}: timing probe")
            epochs = fit_epochs(args.ft_minutes * 60, probe, n, probe_n)
            plan[key] = {"epochs": epochs, "seconds_per_epoch": per_epoch[0]}
    epochs = int(plan[key]["epochs"])
    need = epochs * float(plan[key]["seconds_per_epoch"]) + 30.0
    if need > _left(deadline):
        raise _OutOfTime(f"ICBPL {strategy} needs about {need:.0f}s")
    refresh = min(args.refresh_every, max(1, epochs // 2))
    log(f"ICBPL {strategy}: {epochs} epochs, batch {batch}, neighbours every {refresh}")
    reset_peak(dev)
    t = time.perf_counter()
    res = finetune(
        encoder,
        images,
        k,
        epochs=epochs,
        refresh_every=refresh,
        labels=labels,
        eval_every=max(1, epochs // 5),
        checkpoint_dir=args.out / key,
        resume=True,
        **kw,
    )
    seconds = time.perf_counter() - t
    for h in res.history:
        if "acc" in h and "total" in h:
            log(f"  after epoch {int(h['epoch']) + 1}: loss {h['total']:.4f} {fmt(h)}")
    final = evaluate(labels, res.labels)
    stages[f"icbpl_{strategy}"] = {
        "epochs": epochs,
        "batch_size": batch,
        "seconds": seconds,
        "seconds_per_epoch": res.seconds_per_epoch,
        "peak_gpu_gb": peak_gb(dev),
        "encoder_lr": enc_lr,
        "refresh_every": refresh,
        **final,
        "cluster_sizes": np.bincount(res.labels, minlength=k).tolist(),
    }
    log(f"ICBPL {strategy}: {fmt(final)} ({seconds:.0f}s)")


def fmt(m: dict[str, Any]) -> str:
    return f"ACC {m['acc']:.4f} NMI {m['nmi']:.4f} ARI {m['ari']:.4f}"


def write(out: Path, results: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1))
    info, st = results["info"], results["stages"]
    smoke = " (SMOKE settings)" if info["smoke"] else ""
    lines = [
        f"# GPU protocol: {info['dataset']}",
        "",
        f"Device: {info['device']}; torch {info['torch']}; {info['n_images']} images; "
        f"total {info['total_seconds'] / 60:.1f} min{smoke}.",
        "",
        "| stage | epochs | s/epoch | peak GPU GiB | ACC | NMI | ARI |",
        "|---|---|---|---|---|---|---|",
    ]
    bt = st["barlow_twins"]
    km = st["kmeans_on_bt_features"]
    lines.append(
        f"| Barlow Twins + k-means | {bt['epochs']} | {bt['seconds_per_epoch']:.2f} | "
        f"{bt['peak_gpu_gb']:.2f} | {km['acc']:.4f} | {km['nmi']:.4f} | {km['ari']:.4f} |"
    )
    for name, s in st.items():
        if name.startswith("icbpl_"):
            lines.append(
                f"| ICBPL {name[6:]} | {s['epochs']} | {s['seconds_per_epoch']:.2f} | "
                f"{s['peak_gpu_gb']:.2f} | {s['acc']:.4f} | {s['nmi']:.4f} | {s['ari']:.4f} |"
            )
    (out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(0 if main()["complete"] else 3)
