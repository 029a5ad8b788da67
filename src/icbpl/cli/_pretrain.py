"""``icbpl pretrain``: Barlow Twins on the user's images, written as an encoder folder.

The folder (`icbpl.deep.pretrain.read_encoder_folder`) is what ``icbpl cluster --weights DIR`` and
``icbpl encoders DIR`` read. A checkpoint is written atomically after every epoch;
``--resume`` continues from it (the same settings are required), so ``--minutes`` can cut a long
schedule into windows. Under ``torchrun`` every process trains on its share of each global batch
(`icbpl.deep.distributed`) and rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from icbpl.cli._common import CliError, log_file
from icbpl.cli._types import add_options, number, source_options

__all__ = ["cmd_pretrain", "pretrain_options"]

#: Files and folders of an encoder folder (anything else makes ``--out`` a foreign folder).
_FOLDER_ENTRIES = {"encoder.safetensors", "encoder.json", "checkpoint", "log.txt"}


def _widths(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected layer widths >= 1 separated by commas, e.g. 2048,2048,2048; got {text!r}"
        )
    return values


#: ``icbpl pretrain``'s options after PATH, --out and the source options.
_OPTIONS: dict[tuple[Any, ...], str] = {
    ("--encoder", None, "NAME"): "encoder architecture (default: that of --weights DIR, "
    "else efficientnet_lite0; `icbpl encoders` lists them; resnet18_cifar for the paper's "
    "CIFAR protocol)",
    ("--weights", None, "FILE|DIR"): "start from these weights: a checkpoint file, an "
    "encoder folder, or 'random' for training from scratch (default: the encoder's "
    "default weights)",
    ("--input-size", number(int, 8), "PX"): "input side in px",
    ("--epochs", number(int, 1), "E", 100): "length of the schedule in epochs (default: "
    "100; the paper's in-domain encoders use about 1,000)",
    ("--minutes", number(float, 0.0, strict=True), "M"): "stop after the epoch that ends "
    "past M minutes (the encoder so far is written; the same command with --resume "
    "continues the schedule)",
    ("--resume", bool, None): "continue from ENCODER_DIR/checkpoint",
    ("--batch-size", number(int, 2), "B"): "global batch of images per step (default: "
    "256, or fewer for a small folder)",
    ("--projector", _widths, "W,W,W", (2048, 2048, 2048)): "projector widths (default: "
    "2048,2048,2048; smaller for small encoders on a CPU)",
    ("--optimizer", ("lars", "sgd", "adamw"), None, "lars"): "optimiser (default: lars, "
    "as Barlow Twins)",
    ("--lr", number(float, 0.0, strict=True), "LR"): "learning rate (default: 0.3 / 0.05 "
    "/ 1e-3 per 256 images for lars / sgd / adamw)",
    ("--device", None, "DEV", "auto"): "auto, cpu, cuda[:i] or mps",
    ("--precision", ("auto", "fp32", "bf16"), None, "auto"): "(default: auto)",
    ("--seed", number(int, 0), "S", 0): "(default: 0)",
    ("--threads", number(int, 1), "N"): "CPU threads of torch",
}


def pretrain_options(p: argparse.ArgumentParser) -> None:
    """``icbpl pretrain``'s arguments."""
    p.add_argument("path", metavar="PATH", help="folder of images, or a dataset root")
    p.add_argument("--out", required=True, metavar="ENCODER_DIR", help="encoder folder to write")
    source_options(p)
    add_options(p, _OPTIONS)


def _check_out(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file; pass a folder for the encoder")
    entries = {p.name for p in out.iterdir()} if out.is_dir() else set()
    if entries - _FOLDER_ENTRIES:
        raise CliError(
            f"--out {out} is a non-empty folder that is not an encoder folder; pass a new or "
            "empty folder"
        )
    if "checkpoint" in entries and not resume:
        raise CliError(
            f"--out {out} holds the checkpoint of an earlier run; pass --resume to continue it, "
            "or a new folder to start again"
        )


def _start_epoch(out: Path, resume: bool) -> int:
    pointer = out / "checkpoint" / "latest.json"
    if not (resume and pointer.is_file()):
        return 0
    return int(json.loads(pointer.read_text(encoding="utf-8")).get("epoch", 0))


def _encoder(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The starting encoder and the ``create`` entry of encoder.json (how to rebuild it)."""
    from icbpl.deep.pretrain import is_encoder_folder, read_encoder_folder
    from icbpl.pipeline import build_encoder

    name, weights, size = args.encoder or "efficientnet_lite0", args.weights, args.input_size
    start = weights or "default"
    if weights is not None and is_encoder_folder(weights):
        folder = read_encoder_folder(weights)
        if args.encoder not in (None, folder.encoder):
            raise CliError(
                f"--weights {weights} holds a {folder.encoder} encoder, not --encoder {name}"
            )
        name, weights, size = folder.encoder, str(folder.weights), size or folder.input_size
        start = f"{folder.folder} (sha of weights: {folder.meta.get('config', {}).get('weights')})"
    encoder = build_encoder(name, weights, size, args.seed)
    options = {} if size is None else {"input_size": int(size)}
    return encoder, {"encoder": name, "options": options, "started_from": start}


def cmd_pretrain(args: argparse.Namespace) -> int:
    """``icbpl pretrain``: run Barlow Twins and write the encoder folder."""
    from icbpl.deep.distributed import context
    from icbpl.util.device import cpu_threads

    out = Path(args.out).expanduser()
    ctx = context()
    if ctx.is_main:
        _check_out(out, args.resume)
    with cpu_threads(args.threads):
        if not ctx.is_main:
            return _pretrain(args, out)
        out.mkdir(parents=True, exist_ok=True)
        with log_file(out / "log.txt", verbose=args.verbose):
            return _pretrain(args, out)


def _pretrain(args: argparse.Namespace, out: Path) -> int:
    import logging

    from tqdm.auto import tqdm

    from icbpl.deep.distributed import context
    from icbpl.deep.pretrain import pretrain_barlow_twins
    from icbpl.pipeline import open_source

    logging.getLogger("icbpl.cli").info("%s", args.command_line)
    ctx = context()
    encoder, create = _encoder(args)
    source = open_source(
        args.path, args.dataset, args.split, include_hidden=bool(args.include_hidden)
    )
    n = len(source)
    batch = args.batch_size or min(256, n - n % ctx.world_size)
    if n < batch:
        raise CliError(f"{n} images should be >= --batch-size {batch}; pass a smaller one")
    steps = n // batch
    start = _start_epoch(out, args.resume)
    bar: Any = tqdm(
        total=args.epochs * steps,
        initial=start * steps,
        desc="barlow twins",
        unit="step",
        disable=args.quiet or not ctx.is_main,
    )

    def on_step(epoch: int, step: int, losses: dict[str, float]) -> None:
        bar.set_postfix(epoch=f"{epoch + 1}/{args.epochs}", loss=f"{losses['loss']:.1f}")
        bar.update(1)

    try:
        result = pretrain_barlow_twins(
            encoder,
            source,
            epochs=args.epochs,
            batch_size=batch,
            projector=args.projector,
            optimizer=args.optimizer,
            lr=args.lr,
            warmup_epochs=min(10, args.epochs // 10),
            device=args.device,
            precision=args.precision,
            seed=args.seed,
            out_dir=out,
            resume=args.resume,
            on_step=on_step,
            max_seconds=None if args.minutes is None else 60.0 * args.minutes,
            metadata={"create": create, "images": {"path": str(Path(args.path).resolve()), "n": n}},
        )
    finally:
        bar.close()
    if ctx.is_main:
        _print_result(args, out, result, n)
    return 0


def _print_result(args: argparse.Namespace, out: Path, result: Any, n: int) -> None:
    history = result.history
    done = int(history[-1]["epoch"]) + 1 if history else 0
    name = result.encoder.config.name
    loss = f"loss {history[0]['loss']:.1f} -> {history[-1]['loss']:.1f}" if history else ""
    print(
        f"pre-trained {name} with Barlow Twins on {n} images: epoch {done} of {args.epochs} "
        f"({loss}; {result.seconds_per_epoch:.1f} s per epoch)"
    )
    if done < args.epochs:
        print(
            f"stopped by --minutes {args.minutes:g}; the same command with --resume continues "
            f"from epoch {done}",
            file=sys.stderr,
        )
    print(f"wrote {out}/ (encoder.safetensors, encoder.json, checkpoint/, log.txt)")
    print(f"use it: icbpl cluster {args.path} --k K --weights {out}")
