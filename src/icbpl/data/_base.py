"""The `ImageSource` contract, the in-memory `ArraySource`, and small shared helpers."""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

#: Bumped whenever decoding changes the pixels a source returns (part of every fingerprint).
DECODE_VERSION = "icbpl-decode-1"


class DataError(ValueError):
    """A data input that cannot be used: the message says what was found and how to fix it."""


@runtime_checkable
class ImageSource(Protocol):
    """A random-access list of RGB images (see docs/DESIGN.md, "Images").

    Sources whose pixels already sit in one array may also offer ``as_array()`` returning
    ``(N, H, W, 3)`` uint8 (or ``None``) so that feature extraction can batch without per-image
    Python overhead; it is optional and not part of this protocol.
    """

    ids: list[str]
    labels: np.ndarray | None
    class_names: list[str] | None
    skipped: list[tuple[str, str]]

    def __len__(self) -> int:
        """Number of images."""
        ...

    def load(self, i: int) -> Tensor:
        """Image ``i`` as a ``(3, H, W)`` uint8 RGB tensor."""
        ...

    def fingerprint(self) -> str:
        """Content identity for cache keys."""
        ...


def cache_root() -> Path:
    """Root of icbpl's user cache: ``$ICBPL_CACHE``, else ``$XDG_CACHE_HOME/icbpl``, else
    ``~/.cache/icbpl``. Nothing is created here."""
    env = os.environ.get("ICBPL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "icbpl"


def check_split(split: str, allowed: Sequence[str], dataset: str) -> str:
    """Return ``split`` if it is one of ``allowed``, else raise a `DataError` naming them."""
    if split not in allowed:
        raise DataError(
            f"split={split!r} is not available for {dataset}; expected one of "
            f"{', '.join(repr(s) for s in allowed)}"
        )
    return split


def file_identity(paths: Sequence[Path]) -> str:
    """Identity of files by content: a hash of each file's name, size and bytes.

    Content, not modification times, so a dataset copied to another disk or machine (new mtimes)
    keeps its identity and every cache keyed by it. Directories (used as cheap markers of big
    folders) contribute their name, size and mtime.
    """
    h = hashlib.blake2b(DECODE_VERSION.encode(), digest_size=16)
    for p in paths:
        st = p.stat()
        if p.is_file():
            h.update(f"{p.name}\0{st.st_size}\n".encode(errors="surrogateescape"))
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        else:
            h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode(errors="surrogateescape"))
    return h.hexdigest()


def _check_labels(labels: object, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    arr = np.asarray(labels)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(
            f"labels should be an integer array of shape ({n},), got dtype={arr.dtype} "
            f"shape={arr.shape}; pass one integer class index per image, or labels=None"
        )
    if n and arr.min() < 0:
        raise DataError(f"labels should be >= 0, got min={arr.min()}; re-index the classes")
    return arr.astype(np.int64, copy=False)


def _to_nhwc(images: np.ndarray, layout: str) -> np.ndarray:
    if images.ndim == 3:
        return images[..., None]
    if images.ndim != 4:
        raise DataError(
            f"images should have shape (N,H,W), (N,H,W,C) or (N,C,H,W), got {images.shape}"
        )
    if layout == "auto":
        layout = "NHWC" if images.shape[3] in (1, 3, 4) else "NCHW"
    if layout == "NCHW":
        images = images.transpose(0, 2, 3, 1)
    if images.shape[3] not in (1, 3, 4):
        raise DataError(
            f"could not find a channel axis of size 1, 3 or 4 in images of shape {images.shape} "
            f"(layout={layout}); pass layout='NHWC' or 'NCHW' explicitly"
        )
    return images


def _to_uint8(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        if images.size and not np.isfinite(images).all():
            raise DataError("float images contain NaN or inf; clean them before clustering")
        lo, hi = (float(images.min()), float(images.max())) if images.size else (0.0, 1.0)
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"float images should lie in [0, 1], got values in [{lo:g}, {hi:g}]; divide "
                "0..255 data by 255 or pass uint8"
            )
        return np.rint(images * 255.0).astype(np.uint8)
    if np.issubdtype(images.dtype, np.integer) or images.dtype == np.bool_:
        if images.dtype == np.bool_:
            return images.astype(np.uint8) * 255
        lo, hi = (int(images.min()), int(images.max())) if images.size else (0, 0)
        if lo < 0 or hi > 255:
            raise DataError(
                f"integer images should lie in [0, 255], got values in [{lo}, {hi}] "
                f"(dtype={images.dtype}); rescale them to 8 bits first"
            )
        return images.astype(np.uint8)
    raise DataError(f"images should be uint8 or float, got dtype={images.dtype}")


def _to_rgb(images: np.ndarray) -> np.ndarray:
    c = images.shape[3]
    if c == 3:
        return images
    if c == 1:
        return np.repeat(images, 3, axis=3)
    # RGBA: composite on white, like the folder loader (see _imageio.py).
    alpha = images[..., 3:4].astype(np.float32) / 255.0
    rgb = images[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.rint(rgb).astype(np.uint8)


class ArraySource:
    """Images held in one array: ``(N,H,W)`` grey, ``(N,H,W,C)`` or ``(N,C,H,W)``, C in {1,3,4}.

    uint8 is taken as is; floats must lie in [0, 1]; other integers in [0, 255]. Grey becomes
    RGB by repetition, RGBA is composited on white. An ``(N,H,W,3)`` uint8 array (for example a
    read-only memory map) is kept without a copy; anything else is converted once.

    Args:
        images: the pixel array.
        labels: optional ``(N,)`` integer class indices (evaluation only).
        class_names: optional names, one per class index.
        ids: optional identifiers; default ``"{id_prefix}{i:06d}"``.
        id_prefix: prefix of the default ids.
        layout: ``"auto"`` (a last axis of size 1/3/4 means NHWC, else NCHW), ``"NHWC"`` or
            ``"NCHW"``.
        fingerprint: precomputed content identity; default a hash of the pixels (computed once,
            on first use).
        skipped: ``(path, reason)`` of inputs left out while building the array.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | Sequence[int] | None = None,
        *,
        class_names: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        id_prefix: str = "array/",
        layout: Literal["auto", "NHWC", "NCHW"] = "auto",
        fingerprint: str | None = None,
        skipped: Sequence[tuple[str, str]] = (),
    ) -> None:
        if not isinstance(images, np.ndarray):
            raise DataError(f"images should be a numpy array, got {type(images).__name__}")
        if layout not in ("auto", "NHWC", "NCHW"):
            raise DataError(f"layout should be 'auto', 'NHWC' or 'NCHW', got {layout!r}")
        self._x = _to_rgb(_to_uint8(_to_nhwc(images, layout)))
        n = len(self._x)
        self.labels = _check_labels(labels, n)
        self.class_names = list(class_names) if class_names is not None else None
        if self.labels is not None and self.class_names is not None and n:
            if int(self.labels.max()) >= len(self.class_names):
                raise DataError(
                    f"labels go up to {int(self.labels.max())} but only "
                    f"{len(self.class_names)} class_names were given; pass one name per class"
                )
        self.ids = list(ids) if ids is not None else [f"{id_prefix}{i:06d}" for i in range(n)]
        if len(self.ids) != n:
            raise DataError(f"got {len(self.ids)} ids for {n} images; pass one id per image")
        self.skipped: list[tuple[str, str]] = list(skipped)
        self._fingerprint = fingerprint

    def __len__(self) -> int:
        """Number of images."""
        return len(self._x)

    def __repr__(self) -> str:
        h, w = self._x.shape[1:3]
        return f"ArraySource(n={len(self)}, size={h}x{w}, labelled={self.labels is not None})"

    def load(self, i: int) -> Tensor:
        """Image ``i`` as a fresh ``(3, H, W)`` uint8 RGB tensor."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"image index {i} out of range for {len(self)} images")
        return torch.from_numpy(np.ascontiguousarray(self._x[i].transpose(2, 0, 1)))

    def as_array(self) -> np.ndarray:
        """All images as ``(N, H, W, 3)`` uint8 (may be a read-only memory map: do not write)."""
        return self._x

    def fingerprint(self) -> str:
        """Content identity: the given fingerprint, else a hash of the pixels and ids."""
        if self._fingerprint is None:
            h = hashlib.blake2b(DECODE_VERSION.encode(), digest_size=16)
            h.update(str(self._x.shape).encode())
            for start in range(0, len(self._x), 4096):
                h.update(np.ascontiguousarray(self._x[start : start + 4096]).data)
            h.update("\n".join(self.ids).encode(errors="surrogateescape"))
            self._fingerprint = h.hexdigest()
        return self._fingerprint


def split_source(
    dataset: str, parts: Sequence[str], xs: list[np.ndarray], ys: list[np.ndarray], **kwargs: Any
) -> ArraySource:
    """The splits ``parts`` (one image array each in ``xs``, one label array each in ``ys``, or
    none when unlabelled) as one `ArraySource` with ids ``"{dataset}/{split}/{i:06d}"``;
    ``kwargs`` go to `ArraySource`."""
    ids = [f"{dataset}/{s}/{i:06d}" for s, x in zip(parts, xs, strict=True) for i in range(len(x))]
    x = xs[0] if len(xs) == 1 else np.concatenate(xs)
    return ArraySource(x, np.concatenate(ys) if ys else None, ids=ids, **kwargs)


def summarize(source: ImageSource) -> str:
    """A short human-readable summary: counts, skipped inputs grouped by reason, duplicates."""
    lines = [f"{len(source)} images"]
    if source.class_names is not None and source.labels is not None:
        lines[0] += f" in {len(source.class_names)} classes"
    if source.skipped:
        reasons = Counter(reason.split(":", 1)[0] for _, reason in source.skipped)
        lines.append(f"{len(source.skipped)} inputs skipped:")
        lines += [f"  {count:6d}  {reason}" for reason, count in reasons.most_common()]
        lines += [f"  e.g. {p}: {r}" for p, r in source.skipped[:5]]
    groups: list[list[str]] = getattr(source, "duplicate_groups", [])
    if groups:
        extra = sum(len(g) - 1 for g in groups)
        lines.append(f"{len(groups)} groups of exact duplicates ({extra} extra copies, kept):")
        lines += [f"  {' = '.join(g[:4])}{' ...' if len(g) > 4 else ''}" for g in groups[:5]]
    degraded: list[tuple[str, str]] = getattr(source, "degraded", [])
    if degraded:
        lines.append(f"{len(degraded)} images failed to decode when loaded (placeholder used):")
        lines += [f"  {p}: {r}" for p, r in degraded[:5]]
    return "\n".join(lines)
