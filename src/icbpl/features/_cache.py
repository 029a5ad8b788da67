"""Memory-mapped row caches: a float32 ``.npy`` plus a JSON sidecar of the rows that are done.

A cache holds ``slots`` arrays of ``(N, D)`` rows: the plain features use one slot, stored as an
``(N, D)`` file; augmented views use ``(S, N, D)``, one slot per view. Rows are written in order;
after each chunk the memory map is flushed and the sidecar, which records how many leading rows of
every slot are complete, is replaced atomically (write to a temporary file, then `os.replace`). An
interrupted run therefore resumes after the last committed chunk. A sidecar that cannot be read,
whose key or shape disagrees, or whose ``.npy`` cannot be mapped makes the cache start over, with
a warning. A views cache asked for more views than it holds grows in place (completed views kept).

The sidecar also holds a BLAKE2b checksum of every chunk of CHUNK_ROWS rows of each slot (of its
complete rows). Opening a cache verifies them all; a chunk that fails (rows overwritten on disk,
NaN or plausible values alike) is reported with a warning naming the cache file and counted as
missing (`RowCache.missing`), so extraction recomputes exactly those rows and the checksum again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from icbpl.util.atomic import atomic_open

__all__ = ["RowCache", "cache_key"]

logger = logging.getLogger(__name__)

FORMAT = "icbpl-rowcache-2"

CHUNK_ROWS = 1024
"""Rows per checksummed chunk (a multiple of the views' block of 32 rows)."""


def _digest(rows: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(rows).data, digest_size=16).hexdigest()


def cache_key(fields: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``fields`` (sorted keys), as 64 hex characters."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _check_file_size(path: Path) -> None:
    """Raise ValueError if the ``.npy`` is shorter or longer than its header says.

    (`numpy.memmap` in ``r+`` mode would silently zero-extend a truncated file.)
    """
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        expected = f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise ValueError(f"file has {actual} bytes, its header implies {expected}")


class RowCache:
    """A resumable ``(N, D)`` (``slots=None``) or ``(S, N, D)`` float32 memory map on disk.

    Use `RowCache.open`; then `write` rows, `commit` after each chunk, and `read` at the end.

    Attributes:
        path: the ``.npy`` file; the sidecar is ``path.with_suffix(".json")``.
        rows_complete: leading complete rows of each slot (committed).
    """

    def __init__(
        self,
        path: Path | None,
        key: str,
        fields: dict[str, Any],
        array: np.ndarray,
        rows_complete: list[int],
        sums: list[list[str]] | None = None,
        bad: list[set[int]] | None = None,
    ) -> None:
        self.path, self.key, self.fields = path, key, fields
        self._array, self.rows_complete, self._pending = array, rows_complete, list(rows_complete)
        #: per slot, the checksum of each chunk (of its complete rows)
        self._sums = sums if sums is not None else [[] for _ in rows_complete]
        #: per slot, the chunks that failed their checksum and are not yet rewritten whole
        self.bad = bad if bad is not None else [set() for _ in rows_complete]
        self._refill: dict[tuple[int, int], int] = {}
        self._touched: set[tuple[int, int]] = set()

    @classmethod
    def in_memory(cls, n: int, d: int, slots: int | None = None) -> RowCache:
        """The same interface over an array in RAM (no files, nothing to resume)."""
        shape = (n, d) if slots is None else (slots, n, d)
        return cls(None, "", {}, np.zeros(shape, dtype=np.float32), [0] * (slots or 1))

    @classmethod
    def open(
        cls,
        directory: Path,
        prefix: str,
        fields: dict[str, Any],
        n: int,
        d: int,
        slots: int | None = None,
    ) -> RowCache:
        """Open (resume, grow) or create the cache of ``fields`` under ``directory``.

        Args:
            directory: cache folder (created if missing).
            prefix: file name prefix (``"features"``, ``"views"``).
            fields: what produced the rows; its `cache_key` names the files.
            n, d: rows and row width.
            slots: ``None`` for one ``(N, D)`` array, else at least this many ``(N, D)`` slots.
        """
        directory.mkdir(parents=True, exist_ok=True)
        key = cache_key(fields)
        path = directory / f"{prefix}-{key[:24]}.npy"
        want = 1 if slots is None else slots
        found = cls._load(path, key, n, d, slots is not None)
        if found is not None:
            cache = cls(path, key, fields, *found)
            cache._verify()
            if len(cache.rows_complete) < want:
                cache._grow(want)
            return cache
        return cls._create(path, key, fields, n, d, slots)

    @classmethod
    def _load(
        cls, path: Path, key: str, n: int, d: int, stacked: bool
    ) -> tuple[np.ndarray, list[int], list[list[str]]] | None:
        sidecar = path.with_suffix(".json")
        if not sidecar.exists():
            if path.exists():
                logger.info(
                    "feature cache %s has no sidecar (interrupted early): starting over", path
                )
            return None
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            _check_file_size(path)
            array = np.load(path, mmap_mode="r+")
            rows = [int(r) for r in meta["rows_complete"]]
            sums = [[str(h) for h in slot] for slot in meta["checksums"]]
            problem = cls._check(meta, array, rows, key, n, d, stacked)
            if not problem and [len(s) for s in sums] != [-(-r // CHUNK_ROWS) for r in rows]:
                problem = "checksums do not match rows_complete"
        except (OSError, ValueError, KeyError, TypeError) as err:
            problem = f"{type(err).__name__}: {err}"
        if problem:
            warnings.warn(
                f"feature cache {path} is corrupted or does not match ({problem}); rebuilding it",
                RuntimeWarning,
                stacklevel=4,
            )
            return None
        return array, rows, sums

    @staticmethod
    def _check(
        meta: dict[str, Any],
        array: np.ndarray,
        rows: list[int],
        key: str,
        n: int,
        d: int,
        stacked: bool,
    ) -> str:
        if meta.get("format") != FORMAT or meta.get("key") != key:
            return "format or key differs"
        if array.dtype != np.float32 or array.shape[-2:] != (n, d):
            return f"array is {array.dtype} {array.shape}, expected float32 (..., {n}, {d})"
        if array.ndim != (3 if stacked else 2):
            return f"array has {array.ndim} dimensions"
        slots = array.shape[0] if stacked else 1
        if not 1 <= len(rows) <= slots or not all(0 <= r <= n for r in rows):
            return f"rows_complete={rows} does not fit {slots} slot(s) of {n} rows"
        return ""

    @classmethod
    def _create(
        cls, path: Path, key: str, fields: dict[str, Any], n: int, d: int, slots: int | None
    ) -> RowCache:
        with contextlib.suppress(FileNotFoundError):
            path.with_suffix(".json").unlink()
        shape = (n, d) if slots is None else (slots, n, d)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape).flush()
        os.replace(tmp, path)
        cache = cls(path, key, fields, np.load(path, mmap_mode="r+"), [0] * (slots or 1))
        cache.commit()
        return cache

    def _grow(self, slots: int) -> None:
        old, n, d = self._array, *self._array.shape[-2:]
        logger.info("growing views cache %s from %d to %d views", self.path, len(old), slots)
        if self.path is None:
            raise RuntimeError("an in-memory RowCache cannot grow")
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        new = open_memmap(tmp, mode="w+", dtype=np.float32, shape=(slots, n, d))
        for j, rows in enumerate(self.rows_complete):
            for start in range(0, rows, 65536):
                stop = min(rows, start + 65536)
                new[j, start:stop] = old[j, start:stop]
        new.flush()
        del new, old
        os.replace(tmp, self.path)
        self._array = np.load(self.path, mmap_mode="r+")
        self.rows_complete = self.rows_complete + [0] * (slots - len(self.rows_complete))
        self._pending = list(self.rows_complete)
        self._sums += [[] for _ in range(slots - len(self._sums))]
        self.bad += [set() for _ in range(slots - len(self.bad))]
        self.commit()

    def _verify(self) -> None:
        """Check every chunk's checksum; failing chunks go into `bad`, with a warning."""
        for k, rows in enumerate(self.rows_complete):
            data = self.slot(None if self._array.ndim == 2 else k)
            for c, expected in enumerate(self._sums[k]):
                lo, hi = c * CHUNK_ROWS, min((c + 1) * CHUNK_ROWS, rows)
                if _digest(data[lo:hi]) != expected:
                    self.bad[k].add(c)
            if self.bad[k]:
                spans = ", ".join(
                    f"{c * CHUNK_ROWS}:{min((c + 1) * CHUNK_ROWS, rows)}"
                    for c in sorted(self.bad[k])
                )
                where = "" if self._array.ndim == 2 else f" of view {k}"
                warnings.warn(
                    f"feature cache {self.path}: rows {spans}{where} fail their checksum "
                    "(changed on disk since they were written); re-extracting them",
                    RuntimeWarning,
                    stacklevel=4,
                )

    def missing(self, j: int | None = None) -> list[tuple[int, int]]:
        """Row ranges ``(start, stop)`` of slot ``j`` still to (re)compute, in order: the chunks
        that failed their checksum, then the rows after the complete ones."""
        k = 0 if j is None else j
        n = self._array.shape[-2]
        rows = self.rows_complete[k]
        spans = [(c * CHUNK_ROWS, min((c + 1) * CHUNK_ROWS, rows)) for c in sorted(self.bad[k])]
        return spans + ([(rows, n)] if rows < n else [])

    def slot(self, j: int | None = None) -> np.ndarray:
        """The ``(N, D)`` array of slot ``j`` (``None`` for an unstacked cache)."""
        return self._array if j is None else self._array[j]

    def write(self, j: int | None, start: int, rows: np.ndarray) -> None:
        """Write ``rows`` at ``start`` of slot ``j``; they count once `commit` runs."""
        self.slot(j)[start : start + len(rows)] = rows
        k, stop = (0 if j is None else j), start + len(rows)
        if start <= self._pending[k]:
            self._pending[k] = max(self._pending[k], stop)
        for c in range(start // CHUNK_ROWS, -(-stop // CHUNK_ROWS)):
            self._touched.add((k, c))
            if c in self.bad[k]:  # a failed chunk counts once it is rewritten from its start
                lo = c * CHUNK_ROWS
                filled = self._refill.get((k, c), lo)
                if start <= filled:
                    self._refill[(k, c)] = max(filled, stop)

    def commit(self) -> None:
        """Flush the rows written so far and record them in the sidecar (atomically)."""
        self.rows_complete = list(self._pending)
        if self.path is None:
            return
        if isinstance(self._array, np.memmap):
            self._array.flush()
        self._update_sums()
        meta = {
            "format": FORMAT,
            "key": self.key,
            "fields": self.fields,
            "shape": list(self._array.shape),
            "dtype": "float32",
            "rows_complete": self.rows_complete,
            "chunk_rows": CHUNK_ROWS,
            "checksums": self._sums,
        }
        with atomic_open(self.path.with_suffix(".json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1, sort_keys=True)

    def _update_sums(self) -> None:
        """Checksums of the chunks written since the last commit (failed chunks once whole)."""
        for (k, c), filled in list(self._refill.items()):
            rows = self.rows_complete[k]
            if filled >= min((c + 1) * CHUNK_ROWS, rows):
                self.bad[k].discard(c)
                del self._refill[(k, c)]
                self._touched.add((k, c))
        n_chunks = [-(-r // CHUNK_ROWS) for r in self.rows_complete]
        for k, count in enumerate(n_chunks):
            sums = self._sums[k]
            sums += [""] * (count - len(sums))
            for c in range(count):
                if (k, c) in self._touched or not sums[c]:
                    if c in self.bad[k]:
                        continue  # keeps its old checksum: still reported until rewritten
                    lo, hi = c * CHUNK_ROWS, min((c + 1) * CHUNK_ROWS, self.rows_complete[k])
                    data = self.slot(None if self._array.ndim == 2 else k)
                    sums[c] = _digest(data[lo:hi])
        self._touched.clear()

    def read(self, slots: int | None = None) -> np.ndarray:
        """The whole array (a read-only memory map when on disk), or its first ``slots`` slots."""
        array = self._array if self.path is None else np.load(self.path, mmap_mode="r")
        return array if slots is None else array[:slots]
