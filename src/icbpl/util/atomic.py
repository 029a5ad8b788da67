"""Atomic file writes: a temporary file beside the target, flushed, then `os.replace`.

A reader sees the old file or the new one, never half of one; an interrupted write leaves at most
a hidden ``.NAME.PID.tmp`` file. New files get the usual ``0666 & ~umask`` mode (``0644`` under
the common umask), as `open` would give them (`tempfile.mkstemp` would make them ``0600``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text"]


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
