"""What a feature cache folder holds (`cache_entries`) and removing it (`clear_cache`).

Only icbpl's own files are listed or removed: ``features-*``/``views-*`` ``.npy`` + ``.json``
pairs, their interrupted ``.*.tmp`` files, and ``onnx/encoder-*.onnx`` exports with their
``.verified.json`` markers. Anything else in the folder is left alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CacheEntry", "cache_entries", "clear_cache"]

_PATTERNS = (
    "features-*.npy",
    "features-*.json",
    "views-*.npy",
    "views-*.json",
    ".features-*.tmp",
    ".views-*.tmp",
    "onnx/encoder-*.onnx",
    "onnx/encoder-*.onnx.verified.json",
    "onnx/.encoder-*.tmp",
)


@dataclass(frozen=True)
class CacheEntry:
    """One cached array (or ONNX export).

    Attributes:
        path: the ``.npy`` (or ``.onnx``) file.
        kind: ``"features"``, ``"views"`` or ``"onnx"``.
        size_bytes: bytes on disk, sidecar and marker included.
        rows: ``"done/total"`` complete rows of each slot (``""`` for ONNX exports).
        encoder: the encoder's name, when the sidecar records it.
    """

    path: Path
    kind: str
    size_bytes: int
    rows: str
    encoder: str | None


def _own_files(directory: Path) -> list[Path]:
    found = {p for pattern in _PATTERNS for p in directory.glob(pattern)}
    return sorted(p for p in found if p.is_file() and not p.is_symlink())


def _describe(npy: Path) -> tuple[str, str | None]:
    try:
        meta = json.loads(npy.with_suffix(".json").read_text(encoding="utf-8"))
        n = int(meta["shape"][-2])
        rows = " ".join(f"{int(r)}/{n}" for r in meta["rows_complete"])
        encoder = meta.get("fields", {}).get("encoder", {}).get("name")
        return rows, str(encoder) if encoder else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "unreadable sidecar", None


def cache_entries(directory: str | os.PathLike[str]) -> list[CacheEntry]:
    """The arrays and ONNX exports cached in ``directory`` (empty if it does not exist)."""
    root = Path(directory)
    if not root.is_dir():
        return []
    entries = []
    for path in _own_files(root):
        if path.suffix == ".npy":
            kind = path.name.split("-", 1)[0]
            sidecar = path.with_suffix(".json")
            size = path.stat().st_size + (sidecar.stat().st_size if sidecar.is_file() else 0)
            entries.append(CacheEntry(path, kind, size, *_describe(path)))
        elif path.suffix == ".onnx":
            marker = path.with_name(path.name + ".verified.json")
            size = path.stat().st_size + (marker.stat().st_size if marker.is_file() else 0)
            verified = "verified" if marker.is_file() else "not verified yet"
            entries.append(CacheEntry(path, "onnx", size, verified, None))
    return entries


def clear_cache(directory: str | os.PathLike[str]) -> tuple[int, int]:
    """Remove icbpl's files from ``directory``; return (files removed, bytes freed)."""
    root = Path(directory)
    if not root.is_dir():
        return 0, 0
    count = freed = 0
    for path in _own_files(root):
        freed += path.stat().st_size
        path.unlink()
        count += 1
    onnx = root / "onnx"
    if onnx.is_dir() and not any(onnx.iterdir()):
        onnx.rmdir()
    return count, freed
