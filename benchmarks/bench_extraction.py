"""Feature-extraction speed of each numeric backend on real CIFAR-10 JPEGs, in one run.

Measures images/s of ``efficientnet_lite0`` (timm ``tf_efficientnet_lite0``; packaged ImageNet
weights when ``icbpl.encoders`` is available, else random init, which runs at the same speed) at
160 px for: PyTorch fp32 (NCHW), fp32 channels_last, bf16 autocast + channels_last,
``torch.jit.trace`` + ``freeze``, ``torch.compile``, a raw ONNX Runtime session (the library's
export, ``intra_op_num_threads`` = the thread count, every other option at its default, fed
pre-decoded, pre-resized tensors), the library's `OnnxRunner` on the same tensors, and
``icbpl.features.extract_features`` end to end (JPEG decoding, resizing, caching included).
Each backend's features on the first batch are compared with PyTorch fp32 (max abs difference,
min cosine). Rows are timed in interleaved rounds (the order reversed every other round, so a
drift of the machine's load falls on both sides); the ratio of ``extract_features`` to the raw
session is given per round and as the median. Writes the ``extraction-ort`` section of
docs/BENCHMARKS.md (``--no-write``: print only).

    .venv/bin/python benchmarks/bench_extraction.py --n 1024 --skip bf16 jit compile

Timings on a shared machine are noisy: compare rows of one run, not across runs.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import random
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from _common import SHARED_DATA, command_line, cpu_name, preamble, write_section
from icbpl.features import extract_features
from icbpl.features._backends import OnnxRunner
from icbpl.features.augment import resize_batch

DATA = SHARED_DATA / "cifar10-jpg.tar.gz"


class TimmLite0(nn.Module):
    """Stand-in encoder with the `icbpl.encoders.Encoder` interface (random weights)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        import timm

        self.net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
        self.config = argparse.Namespace(
            name="tf_efficientnet_lite0(random)",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            input_size=size,
            feature_dim=self.net.num_features,
            supervised=False,
            weights="random",
        )

    def encode(self, images: Tensor) -> Tensor:
        return self.net((images - 0.5) / 0.5)

    def forward(self, images: Tensor) -> Tensor:
        return self.encode(images)


def make_encoder(size: int) -> nn.Module:
    try:
        from icbpl.encoders import create_encoder  # type: ignore[import-not-found]

        enc = create_encoder("efficientnet_lite0")
        if enc.config.input_size == size:
            return enc.eval()  # type: ignore[no-any-return]
    except Exception as err:
        print(f"(icbpl.encoders unavailable: {type(err).__name__}: {err}; using random weights)")
    return TimmLite0(size).eval()


def read_jpegs(path: Path, n: int, seed: int = 0) -> list[bytes]:
    """``n`` JPEG files of the test split, a seeded random sample across classes."""
    with tarfile.open(path) as tf:
        members = [m for m in tf.getmembers() if m.isfile() and "test/" in m.name]
        random.Random(seed).shuffle(members)
        out = []
        for m in members[:n]:
            f = tf.extractfile(m)
            if f is not None:
                out.append(f.read())
    return out


class JpegSource:
    """An `ImageSource` that decodes JPEG bytes on each load, like a folder of files."""

    def __init__(self, blobs: list[bytes]) -> None:
        self.blobs = blobs
        self.ids = [f"cifar10-jpg/{i}" for i in range(len(blobs))]
        self.round = 0
        self.labels = None
        self.class_names = None
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.blobs)

    def load(self, i: int) -> Tensor:
        with Image.open(io.BytesIO(self.blobs[i])) as im:
            arr = np.asarray(im.convert("RGB"))
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def fingerprint(self) -> str:
        return f"bench-{len(self.blobs)}-round{self.round}"


class Row:
    """One backend: warmed up once, then timed in each round; the best round counts."""

    def __init__(
        self, name: str, fn: Callable[[Tensor], Tensor], x: Tensor, batch: int, note: str = ""
    ) -> None:
        self.name, self.fn, self.x, self.batch, self.note = name, fn, x, batch, note
        self.rates: list[float] = []
        self.first: Tensor | None = None

    def run(self, budget: float) -> None:
        """Time full batches (after the warm-up batch) for up to ``budget`` s, >= 1 batch."""
        with torch.inference_mode():
            if self.first is None:  # warm-up on the timed shape (oneDNN primitives, compile)
                self.first = self.fn(self.x[: self.batch]).float()
            done, t0 = 0, time.perf_counter()
            for s in range(self.batch, len(self.x) - self.batch + 1, self.batch):
                self.fn(self.x[s : s + self.batch])
                done += self.batch
                if time.perf_counter() - t0 > budget:
                    break
        self.rates.append(done / (time.perf_counter() - t0))


class ExtractRow(Row):
    """``extract_features`` end to end on the JPEG source (fresh features cache per round)."""

    def __init__(
        self,
        name: str,
        enc: nn.Module,
        source: JpegSource,
        batch: int,
        workers: int,
        cache: Path,
        backend: str = "onnx",
    ) -> None:
        super().__init__(name, lambda t: t, torch.empty(0), batch, "JPEG decode + resize + cache")
        self.enc, self.source, self.workers, self.cache = enc, source, workers, cache
        self.backend_arg = backend
        self.backend = ""

    def run(self, budget: float) -> None:
        self.source.round += 1  # new fingerprint: features recomputed, ONNX export reused
        t0 = time.perf_counter()
        fs = extract_features(
            self.enc,
            self.source,
            batch_size=self.batch,  # type: ignore[arg-type]
            cache_dir=self.cache,
            progress=False,
            num_workers=self.workers,
            backend=self.backend_arg,  # type: ignore[arg-type]
        )
        self.rates.append(len(self.source) / (time.perf_counter() - t0))
        self.backend = str(fs.meta["backend"])
        self.first = torch.from_numpy(np.array(fs.features[: self.batch]))


def compare(out: Tensor, ref: Tensor) -> tuple[float, float]:
    diff = (out.float() - ref).abs().max().item()
    cos = torch.nn.functional.cosine_similarity(out.float(), ref, dim=1).min().item()
    return diff, cos


class RawOrtRow(Row):
    """A plain ``onnxruntime.InferenceSession``: the thread count, every other option default."""

    def __init__(self, path: Path, x: Tensor, batch: int, threads: int) -> None:
        import onnxruntime as ort

        t = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run(images: Tensor) -> Tensor:
            (out,) = session.run(None, {"images": np.ascontiguousarray(images.numpy())})
            return torch.from_numpy(out)

        note = f"session load {time.perf_counter() - t:.1f} s, export excluded"
        super().__init__(
            f"ONNX Runtime session, raw (CPU EP, fp32, intra_op_num_threads={threads})",
            run,
            x,
            batch,
            note,
        )


def build_rows(
    args: argparse.Namespace, enc: nn.Module, x: Tensor, source: JpegSource, cache: Path
) -> list[Row]:
    b = args.batch
    rows: list[Row] = []
    if "torch" not in args.skip:
        rows.append(Row("torch fp32 (NCHW)", enc.encode, x, b))  # type: ignore[arg-type]
    cl = copy.deepcopy(enc).to(memory_format=torch.channels_last)
    xcl = x.contiguous(memory_format=torch.channels_last)
    if "torch" not in args.skip:
        rows.append(Row("torch fp32 channels_last", cl.encode, xcl, b))  # type: ignore[arg-type]
    if "bf16" not in args.skip:

        def bf16(t: Tensor) -> Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return cl.encode(t)  # type: ignore[operator,no-any-return]

        rows.append(Row("torch bf16 autocast + channels_last", bf16, xcl, 32, "batch 32 (slow)"))
    if "jit" not in args.skip:
        with torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(cl, xcl[:8]).eval())
        rows.append(Row("torch.jit.trace + freeze, channels_last", traced, xcl, b))
    if "compile" not in args.skip:
        import torch._inductor.config as inductor

        inductor.freezing = True
        compiled = torch.compile(cl.encode)
        rows.append(
            Row(
                "torch.compile (inductor, freezing), channels_last",
                compiled,
                xcl,
                b,
                "compiles in the warm-up",
            )
        )
    path = next((cache / "onnx").glob("*.onnx"))  # the library's export (warm-up run)
    rows.append(RawOrtRow(path, x, b, args.threads))
    runner = OnnxRunner(enc, path, args.size)  # type: ignore[arg-type]
    rows.append(
        Row(
            f"icbpl OnnxRunner ({runner.threads} concurrent parts, 1 thread each)",
            runner,
            x,
            b,
            "same session file, decoded tensors",
        )
    )
    for workers in args.workers:
        rows.append(
            ExtractRow(
                f"extract_features(backend={args.backend!r}), num_workers={workers}",
                enc,
                source,
                b,
                workers,
                cache,
                args.backend,
            )
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1024, help="images (default 1024)")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--budget", type=float, default=20.0, help="timed seconds per row and round")
    p.add_argument("--skip", nargs="*", default=[], help="rows to skip: torch bf16 jit compile")
    p.add_argument("--workers", type=int, nargs="+", default=[1], help="extract_features rows")
    p.add_argument("--backend", default="onnx", help="extract_features backend (default onnx)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--no-write", action="store_true", help="do not write docs/BENCHMARKS.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    load0 = os.getloadavg()
    source = JpegSource(read_jpegs(args.data, args.n))
    x = resize_batch(torch.stack([source.load(i) for i in range(len(source))]), args.size)
    enc = make_encoder(args.size)
    with torch.inference_mode():
        ref = enc.encode(x[: args.batch]).float()
    with tempfile.TemporaryDirectory() as tmp:
        ExtractRow("warm", enc, source, args.batch, 1, Path(tmp), "onnx").run(0)  # export once
        rows = build_rows(args, enc, x, source, Path(tmp))
        for r in range(args.rounds):
            for row in rows if r % 2 == 0 else rows[::-1]:
                row.run(args.budget)
                print(f"  round {r}: {row.name}: {row.rates[-1]:.1f} img/s", flush=True)
    body = report(rows, ref, args, load0, enc)
    print(body)
    if not args.no_write:
        write_section("extraction-ort", body)


def report(
    rows: list[Row], ref: Tensor, args: argparse.Namespace, load0: tuple[float, ...], enc: Any
) -> str:
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "absent"
    load1 = os.getloadavg()
    base = max(rows[0].rates)
    lines = [
        "## Feature extraction vs a raw ONNX Runtime session (issue 18, efficientnet_lite0, CPU)\n",
        preamble(command_line()),
        f"- data: {args.n} CIFAR-10 test JPEGs (JPEG copy, 32 px, seeded sample), decoded from "
        f"bytes in memory on every load; encoder {enc.config.name} at {args.size} px, batch "
        f"{args.batch}; CPU {cpu_name()}, {args.threads} threads (torch and ONNX Runtime); "
        f"onnxruntime {ort_version}",
        f"- load average (1, 5, 15 min) at the start {load0[0]:.1f} / {load0[1]:.1f} / "
        f"{load0[2]:.1f}, at the end {load1[0]:.1f} / {load1[1]:.1f} / {load1[2]:.1f} (shared "
        f"machine: compare rows of this run, not runs); {args.rounds} interleaved rounds, "
        "order reversed every other round; img/s is the best round\n",
        "| backend | img/s (best) | per round | vs first row | max abs diff vs torch fp32 "
        "| min cosine | note |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    out = []
    for row in rows:
        assert row.first is not None
        diff, cos = compare(row.first, ref[: row.batch])
        name = row.name + (f" -> {row.backend}" if isinstance(row, ExtractRow) else "")
        best = max(row.rates)
        rounds = ", ".join(f"{v:.1f}" for v in row.rates)
        lines.append(
            f"| {name} | {best:.1f} | {rounds} | {best / base:.2f}x | {diff:.1e} | {cos:.6f} "
            f"| {row.note} |"
        )
        out.append(
            {
                "backend": name,
                "img_s": best,
                "rates": row.rates,
                "max_abs_diff": diff,
                "min_cos": cos,
                "note": row.note,
            }
        )
    raw = next(r for r in rows if isinstance(r, RawOrtRow))
    ours = [r for r in rows if isinstance(r, ExtractRow)]
    if ours:
        per_round = [max(r.rates[i] for r in ours) / raw.rates[i] for i in range(args.rounds)]
        lines += [
            "",
            "**extract_features end to end / raw ONNX Runtime session, wall time, same images "
            f"and threads: median {float(np.median(per_round)):.2f}** (per round "
            f"{', '.join(f'{v:.2f}' for v in per_round)}; best rate / best rate "
            f"{max(max(r.rates) for r in ours) / max(raw.rates):.2f})",
        ]
    if args.json:
        meta = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"rows": out, "args": meta}, indent=1))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
