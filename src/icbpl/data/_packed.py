"""Packed image sets: reading members of tar/zip archives or folders, decoding them once into
uint8 arrays, and caching those arrays as ``.npy`` files in the user cache.

Why: a set such as the CIFAR-10 JPEG copy is 60,000 tiny files. Opening them one by one (or
through ``tarfile``, which parses each header in Python) costs more than decoding them, so the
archive is decompressed in memory, its headers are walked with a minimal ustar parser (falling
back to ``tarfile`` on anything unusual), the JPEGs are decoded with libjpeg-turbo, and the
result is cached as ``.npy`` keyed by the archive's content (`file_identity`). Later loads
memory-map the cache and take well under a second.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from icbpl.data._base import cache_root

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
Meta = dict[str, Any]
_ZERO = bytes(512)


class _Unusual(Exception):
    """The fast tar reader met something it leaves to ``tarfile``."""


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:
        raise _Unusual("base-256 number")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _fast_tar(data: bytes) -> Iterator[tuple[str, int, int]]:
    """(name, offset, size) of the regular files of an in-memory tar (ustar, GNU, pax names)."""
    pos, long_name = 0, None
    while pos + 512 <= len(data):
        h = data[pos : pos + 512]
        if h == _ZERO:
            return
        if _octal(h[148:156]) != sum(h[:148]) + 256 + sum(h[156:]):
            raise _Unusual("header checksum")
        name = h[:100].split(b"\0", 1)[0]
        if h[257:262] == b"ustar" and h[345:346] != b"\0":
            name = h[345:500].split(b"\0", 1)[0] + b"/" + name
        size, kind, start = _octal(h[124:136]), h[156:157], pos + 512
        pos = start + (size + 511) // 512 * 512
        if kind == b"L":
            long_name = data[start : start + size].split(b"\0", 1)[0]
        elif kind == b"x":
            for rec in data[start : start + size].split(b"\n"):
                key, _, value = rec.partition(b" ")[2].partition(b"=")
                if key == b"path":
                    long_name = value
        elif kind in (b"0", b"\0", b"7"):
            yield (long_name or name).decode("utf-8", "replace"), start, size
            long_name = None
        elif kind not in (b"g",):
            long_name = None


def _tar_members(path: Path, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        found = [(n, o, s) for n, o, s in _fast_tar(data) if want(n)]
    except (_Unusual, ValueError) as exc:
        logger.debug("fast tar reader gave up on %s (%s); using tarfile", path, exc)
        with tarfile.open(path) as tf:
            for m in tf:
                fobj = tf.extractfile(m) if m.isfile() and want(m.name) else None
                if fobj is not None:
                    yield m.name, fobj.read()
        return
    for name, offset, size in found:
        yield name, data[offset : offset + size]


def iter_members(source: Path, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """(posix name, bytes) of the files in a tar(.gz), zip or folder whose name ``want`` accepts.

    Folder names are relative to ``source``; hidden files and folders are ignored.
    """
    if source.is_dir():
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                rel = Path(dirpath, fn).relative_to(source).as_posix()
                if not fn.startswith(".") and want(rel):
                    yield rel, Path(dirpath, fn).read_bytes()
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            for info in zf.infolist():
                if not info.is_dir() and want(info.filename):
                    yield info.filename, zf.read(info)
    else:
        yield from _tar_members(source, want)


def cache_dir_for(cache: bool | str | os.PathLike[str], name: str, key: str) -> Path | None:
    """The cache folder of one packed set, or None when caching is off."""
    if cache is False:
        return None
    base = cache_root() / "data" if cache is True else Path(cache).expanduser()
    return base / f"{name}-{key[:16]}"


def load_cached(folder: Path | None) -> tuple[Arrays, Meta] | None:
    """Arrays (memory-mapped, read-only) and metadata of a complete cache folder, else None."""
    if folder is None or not (folder / "meta.json").is_file():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
        arrays = {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in meta["arrays"]}
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("ignoring unreadable data cache %s (%s)", folder, exc)
        return None
    logger.info("loaded cached arrays from %s", folder)
    return arrays, meta


def save_cached(folder: Path | None, arrays: Arrays, meta: Meta) -> None:
    """Write arrays + metadata atomically (temporary folder, then rename); warn on failure."""
    if folder is None or (folder / "meta.json").is_file():
        return
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        for k, arr in arrays.items():
            np.save(tmp / f"{k}.npy", arr)
        (tmp / "meta.json").write_text(json.dumps({**meta, "arrays": sorted(arrays)}))
        os.replace(tmp, folder)
        logger.info("cached decoded arrays in %s", folder)
    except OSError as exc:
        logger.warning("could not write the data cache %s (%s); continuing without it", folder, exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stack_images(
    decoded: list[np.ndarray | str], names: list[str], shape: tuple[int, int]
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Stack decoded images of one expected (H, W) into ``(N, H, W, 3)``.

    Returns the array, the indices kept, and ``(name, reason)`` for the rest.
    """
    kept, skipped = [], []
    for i, (img, name) in enumerate(zip(decoded, names, strict=True)):
        if isinstance(img, str):
            skipped.append((name, img))
        elif img.shape[:2] != shape:
            skipped.append((name, f"unexpected size {img.shape[1]}x{img.shape[0]}"))
        else:
            kept.append(i)
    out = np.empty((len(kept), *shape, 3), dtype=np.uint8)
    for j, i in enumerate(kept):
        out[j] = decoded[i]
    return out, kept, skipped
