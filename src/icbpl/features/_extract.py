"""`extract_features`: batched, prefetched, cached encoding of an image source."""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from icbpl.data import ImageSource
from icbpl.features._backends import (
    EncoderLike,
    OnnxRunner,
    TorchRunner,
    choose_backend,
    device_of,
    make_runner,
    weights_digest,
)
from icbpl.features._cache import CHUNK_ROWS, RowCache
from icbpl.features._loading import prefetch_batches
from icbpl.features.augment import RESIZE_METHOD, BatchAugment
from icbpl.util.device import resolve_device, resolve_precision

__all__ = ["FeatureSet", "extract_features"]

logger = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "onnx"]

#: Views are augmented in blocks of this many rows, each with its own generator seeded by
#: (seed, view, block): a view's pixels do not depend on the batch size or on resumption.
VIEW_BLOCK = 32


@dataclass(frozen=True)
class FeatureSet:
    """Features of an image source, with what produced them.

    Attributes:
        features: ``(N, D)`` float32 (a read-only memory map when cached).
        views: ``(V, N, D)`` float32 features of V augmented views, or ``None``.
        ids: the source's image identifiers, row order.
        labels: ``(N,)`` int64 labels when the source knows them (evaluation only), else ``None``.
        meta: provenance for reports and JSON: encoder config, weights digest, preprocessing,
            backend, precision, device, cache files and whether the cache was hit.
    """

    features: np.ndarray
    views: np.ndarray | None
    ids: list[str]
    labels: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)


def _config_dict(config: Any) -> dict[str, Any]:
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    return {k: v for k, v in vars(config).items() if not k.startswith("_")}


def _view_seed(seed: int, view: int, block: int) -> int:
    return int(np.random.SeedSequence([seed, view, block]).generate_state(1, dtype=np.uint64)[0])


def _augment_view(augment: BatchAugment, x: Tensor, seed: int, view: int, start: int) -> Tensor:
    """View ``view`` of rows ``start:start+len(x)`` (``start`` is a multiple of VIEW_BLOCK)."""
    out = torch.empty((len(x), 3, augment.size, augment.size), device=x.device)
    for b0 in range(0, len(x), VIEW_BLOCK):
        gen = torch.Generator().manual_seed(_view_seed(seed, view, (start + b0) // VIEW_BLOCK))
        out[b0 : b0 + VIEW_BLOCK] = augment(x[b0 : b0 + VIEW_BLOCK], gen)
    return out


def _check_args(
    encoder: Any,
    source: Any,
    views: int,
    batch_size: int,
    seed: int,
    backend: str,
    num_workers: int,
) -> None:
    config = getattr(encoder, "config", None)
    if config is None or not hasattr(encoder, "encode"):
        raise TypeError(
            f"encoder should be an icbpl Encoder (with .config and .encode), got "
            f"{type(encoder).__name__}; build one with icbpl.encoders.create_encoder"
        )
    if len(source) == 0:
        raise ValueError("source has no images; check the path and source.skipped")
    checks = {
        "views": (views, 0),
        "batch_size": (batch_size, 1),
        "seed": (seed, 0),
        "num_workers": (num_workers, 0),
    }
    for name, (value, low) in checks.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} should be an integer >= {low}")
    if backend not in ("auto", "torch", "onnx"):
        raise ValueError(f"backend={backend!r} should be 'auto', 'torch' or 'onnx'")


def extract_features(
    encoder: EncoderLike,
    source: ImageSource,
    *,
    views: int = 0,
    augment: BatchAugment | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    precision: str = "auto",
    backend: Backend = "auto",
    channels_last: bool = True,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    num_workers: int = 1,
) -> FeatureSet:
    """Encode every image of ``source`` (and ``views`` augmented views of each) with ``encoder``.

    Images are resized to ``encoder.config.input_size`` (`icbpl.features.augment.resize_batch`),
    encoded in batches and written to a memory-mapped cache, committed every COMMIT_ROWS rows or
    COMMIT_SECONDS seconds and when the call ends or fails, so an interrupted run (even by
    SIGKILL) resumes after the last commit and a finished one is reused.

    Args:
        encoder: an `icbpl.encoders.Encoder` (never modified; copies are moved when needed).
        source: an `icbpl.data.ImageSource`; ``as_array()`` is used when it offers one.
        views: number V of augmented views per image (0: none). View ``j`` of row ``i`` depends
            only on ``(seed, j, i // VIEW_BLOCK)``, not on the batch size or on resumption.
        augment: the augmentation of the views; default ``BatchAugment(input_size)``.
        batch_size: images per forward pass (rounded up to a multiple of VIEW_BLOCK with views).
        device: ``None`` (the encoder's device), ``"auto"``, ``"cpu"``, ``"cuda[:i]"``, ``"mps"``.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (see `icbpl.util.device.resolve_precision`).
        backend: ``"torch"``; ``"onnx"`` (ONNX Runtime on the CPU, fp32; in the base install);
            ``"auto"``: ONNX Runtime for fp32 CPU runs of at least AUTO_ONNX_MIN_IMAGES images
            when it is installed (measured about 3x faster than PyTorch on a 2-core AVX2 CPU,
            same features within 1e-5), else PyTorch; an export that fails falls back to PyTorch.
        channels_last: run PyTorch convolutions in channels_last (2-3x faster on CPU).
        cache_dir: folder of the cache (``features-<key>.npy``/``.json``, ``views-<key>.*``,
            ``onnx/``); ``None`` keeps everything in memory. The key covers the encoder config
            and a digest of its weights, the preprocessing, ``source.fingerprint()`` and the
            numeric precision; the views' key adds the augmentation and ``seed``. PyTorch fp32
            and ONNX Runtime share entries (their features agree within 1e-5).
        seed: seed of the views' augmentations.
        progress: show a tqdm progress bar (its rate is images per second).
        num_workers: threads decoding and resizing the next batches (0: in the calling thread).
            ``source.load`` must be thread-safe when this is above 1.

    Returns:
        A `FeatureSet` with ``features`` ``(N, D)`` and ``views`` ``(V, N, D)`` or ``None``.

    Raises:
        ValueError: invalid arguments (the message says which and what is expected).
        ImportError: ``backend="onnx"`` without onnxruntime.
    """
    _check_args(encoder, source, views, batch_size, seed, backend, num_workers)
    dev = device_of(encoder) if device is None else resolve_device(device)
    config = encoder.config
    size, dim = int(config.input_size), int(config.feature_dim)
    augment = _view_augment(views, augment, size)
    prec = resolve_precision(dev, precision)
    identity: dict[str, Any] = {
        "encoder": _config_dict(config),
        "weights_digest": weights_digest(encoder) if cache_dir is not None else None,
        "preprocess": {"input_size": size, "resize": RESIZE_METHOD},
    }
    meta: dict[str, Any] = {**identity, "precision": prec, "device": str(dev), "views": views}
    meta.update(augment=augment.to_dict() if views and augment else None, seed=seed)
    job = _Job(dev, prec, size, batch_size, seed, num_workers, progress, augment)
    feats, vcache = _encode(
        encoder, source, identity, meta, job, cache_dir, (dim, views), backend, channels_last
    )
    return FeatureSet(
        features=feats.read(),
        views=vcache.read(views) if vcache is not None else None,
        ids=list(source.ids),
        labels=source.labels,
        meta=meta,
    )


COMMIT_ROWS = CHUNK_ROWS
"""Rows written (over all targets) between two commits of the caches."""

COMMIT_SECONDS = 10.0
"""Longest time between two commits: a SIGKILL loses at most this much work (or COMMIT_ROWS)."""


class _Commits:
    """Commits ``caches`` every COMMIT_ROWS written rows or COMMIT_SECONDS, not every batch
    (a commit flushes the memory map and fsyncs the sidecar)."""

    def __init__(self, caches: list[RowCache]) -> None:
        self.caches = caches
        self.rows = 0
        self.since = time.monotonic()

    def wrote(self, rows: int) -> None:
        self.rows += rows
        if self.rows >= COMMIT_ROWS or time.monotonic() - self.since >= COMMIT_SECONDS:
            self.commit()

    def commit(self) -> None:
        for cache in self.caches:
            cache.commit()
        self.rows, self.since = 0, time.monotonic()


def _batch_starts(spans: list[tuple[int, int]], step: int, align: int) -> list[int]:
    """Starts of batches of ``step`` rows covering ``spans`` (merged; each span's first batch
    starts at a multiple of ``align``)."""
    merged: list[list[int]] = []
    for lo, hi in sorted((lo // align * align, hi) for lo, hi in spans if hi > lo):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [s for lo, hi in merged for s in range(lo, hi, step)]


def _needs(spans: list[tuple[int, int]], s: int, e: int) -> bool:
    return any(lo < e and s < hi for lo, hi in spans)


def _view_augment(views: int, augment: BatchAugment | None, size: int) -> BatchAugment | None:
    """The views' augmentation: ``augment``, or the default one when views are asked for."""
    if views and augment is None:
        augment = BatchAugment(size)
    if augment is not None and augment.size != size:
        raise ValueError(f"augment.size={augment.size} should equal the input size {size}")
    return augment


def _encode(
    encoder: EncoderLike,
    source: ImageSource,
    identity: dict[str, Any],
    meta: dict[str, Any],
    job: _Job,
    cache_dir: str | Path | None,
    shape: tuple[int, int],
    backend: Backend,
    channels_last: bool,
) -> tuple[RowCache, RowCache | None]:
    """Open the caches, encode the rows they miss, record cache and backend in ``meta``;
    ``shape``: (feature dimension, number of views)."""
    dim, views = shape
    dev, prec, config = job.device, job.precision, encoder.config
    with contextlib.ExitStack() as stack:
        feats, vcache, onnx_dir = _open_caches(stack, cache_dir, identity, source, job, dim, views)
        targets: list[tuple[RowCache, int | None]] = [(feats, None)]
        targets += [(vcache, j) for j in range(views) if vcache is not None]
        remaining = sum(b - a for c, j in targets for a, b in c.missing(j))
        meta["cache"] = (
            None
            if cache_dir is None
            else {"features": str(feats.path), "views": str(vcache.path) if vcache else None}
        )
        meta["cache_hit"] = cache_dir is not None and remaining == 0
        meta["backend"] = None
        if remaining:
            chosen = choose_backend(backend, dev, prec, remaining)
            runner = make_runner(
                chosen, backend, encoder, identity, onnx_dir, dev, prec, channels_last
            )
            meta["backend"] = runner.name
            _run(runner, source, targets, job, remaining, f"{config.name} [{runner.name}/{prec}]")
        else:
            logger.info("feature cache hit: %s", feats.path)
    return feats, vcache


@dataclass(frozen=True)
class _Job:
    """How the missing rows are encoded: device, precision, input side, batching, seed."""

    device: torch.device
    precision: str
    size: int
    batch_size: int
    seed: int
    num_workers: int
    progress: bool
    augment: BatchAugment | None


def _open_caches(
    stack: contextlib.ExitStack,
    cache_dir: str | Path | None,
    identity: dict[str, Any],
    source: ImageSource,
    job: _Job,
    dim: int,
    views: int,
) -> tuple[RowCache, RowCache | None, Path]:
    """The feature and view row caches (in memory without ``cache_dir``) and the ONNX folder."""
    n = len(source)
    if cache_dir is None:
        feats = RowCache.in_memory(n, dim)
        vcache = RowCache.in_memory(n, dim, views) if views else None
        onnx_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="icbpl-")))
        return feats, vcache, onnx_dir
    root = Path(cache_dir)
    base = {**identity, "source": source.fingerprint(), "numerics": job.precision}
    feats = RowCache.open(root, "features", {**base, "kind": "features"}, n, dim)
    vcache = None
    if views and job.augment is not None:
        vfields = {
            **base,
            "kind": "views",
            "augment": job.augment.to_dict(),
            "seed": job.seed,
            "view_block": VIEW_BLOCK,
        }
        vcache = RowCache.open(root, "views", vfields, n, dim, slots=views)
    return feats, vcache, root / "onnx"


def _run(
    runner: TorchRunner | OnnxRunner,
    source: ImageSource,
    targets: list[tuple[RowCache, int | None]],
    job: _Job,
    remaining: int,
    desc: str,
) -> None:
    augment, device, size, seed = job.augment, job.device, job.size, job.seed
    batch_size, num_workers, progress = job.batch_size, job.num_workers, job.progress
    n = len(source)
    stacked = len(targets) > 1
    step = math.ceil(batch_size / VIEW_BLOCK) * VIEW_BLOCK if stacked else batch_size
    todo = [c.missing(j) for c, j in targets]
    align = VIEW_BLOCK if stacked else 1
    starts = _batch_starts([span for spans in todo for span in spans], step, align)
    cached = [n - sum(b - a for a, b in spans) for spans in todo]
    if any(cached):
        kinds = ["features"] + [f"view {j}" for _, j in targets[1:]]
        rows = ", ".join(f"{kind} {c}/{n}" for kind, c in zip(kinds, cached, strict=True))
        text = "resuming feature extraction: rows already in the cache: %s"
        logger.info(text, rows, extra={"console": True})
    t0 = time.perf_counter()
    commits = _Commits([cache for cache, _ in targets])
    with tqdm(total=remaining, unit="img", desc=desc, disable=not progress) as bar:
        try:
            for s, images in prefetch_batches(source, starts, step, size, num_workers):
                x = images.to(device, non_blocking=True)
                e = s + len(x)
                for (cache, j), spans in zip(targets, todo, strict=True):
                    if not _needs(spans, s, e):
                        continue
                    if j is not None and augment is not None:
                        out = runner(_augment_view(augment, x, seed, j, s))
                    else:
                        out = runner(x)
                    if not bool(torch.isfinite(out).all()):
                        raise RuntimeError(f"the encoder returned NaN or inf for images {s}:{e}")
                    cache.write(j, s, out.numpy())
                    done = sum(min(e, b) - max(s, a) for a, b in spans if a < e and s < b)
                    commits.wrote(done)
                    bar.update(done)
        finally:
            # an exception (Ctrl-C, a failing image) keeps every row written before it, the
            # features of an interrupted batch's views included; SIGKILL keeps the last commit
            commits.commit()
    elapsed = time.perf_counter() - t0
    rate = remaining / max(elapsed, 1e-9)
    logger.info("encoded %d images in %.1f s (%.1f img/s)", remaining, elapsed, rate)
