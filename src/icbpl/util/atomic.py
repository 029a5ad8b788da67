"""Atomic file writes (a temporary file beside the target, flushed, then `os.replace`) and JSON.

A reader sees the old file or the new one, never half of one; an interrupted write leaves at most
a hidden ``.NAME.PID.tmp`` file. New files get the usual ``0666 & ~umask`` mode (``0644`` under
the common umask), as `open` would give them (`tempfile.mkstemp` would make them ``0600``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "jsonable", "write_json"]


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on a clean exit it replaces ``path`` atomically.

    Args:
        path: the file to (re)place.
        mode: ``"wb"`` or ``"w"`` (then ``kwargs`` such as ``encoding``, ``newline`` apply).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode={mode!r} should be 'w' or 'wb'")
    target = Path(path)
    tmp = _tmp_name(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with open(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples and paths made JSON-ready; NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    return value


def write_json(path: str | os.PathLike[str], data: Any, indent: int = 2) -> Path:
    """Write ``jsonable(data)`` as indented JSON (``allow_nan=False``), atomically."""
    return atomic_write_text(
        path, json.dumps(jsonable(data), indent=indent, allow_nan=False) + "\n"
    )
