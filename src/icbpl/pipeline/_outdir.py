"""`ResultsFolder`: a run writes into a staging folder beside ``--out``, swapped in at the end.

While a run is under way, ``.<name>.icbpl-lock`` beside the folder holds its pid under an
exclusive `fcntl.flock` (released by the kernel even on SIGKILL), so a second run on the same
folder stops with a message naming that pid. The run writes into ``.<name>.icbpl-staging-<pid>``;
on success the manifest (`icbpl.util.manifest`) is written there and the staging folder takes the
place of ``--out`` in one atomic exchange (``renameat2(RENAME_EXCHANGE)`` on Linux, else two
renames). The previous results then lose only the files their manifest lists: any other file
in them is moved into the new folder. A run that fails or is interrupted removes its staging
folder (a killed one leaves it, and the next run on that folder cleans it up); the previous
results are untouched either way.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
from pathlib import Path
from types import TracebackType

from icbpl.pipeline._config import PipelineError
from icbpl.pipeline._stages import RUN_OUTPUTS
from icbpl.util.manifest import MANIFEST, listed_files, read_manifest, write_manifest

__all__ = ["ResultsFolder", "check_out_dir", "refuse_run_output"]

logger = logging.getLogger(__name__)


def check_out_dir(out: Path, *, overwrite: bool) -> None:
    """Refuse an ``out`` that is a file, a foreign non-empty folder, or (without ``overwrite``)
    an earlier run's results."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise PipelineError(f"--out {out} is a file or a link; pass a folder for the results")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if read_manifest(out) is None:
        raise PipelineError(
            f"--out {out} is a non-empty folder that icbpl did not write (it has no {MANIFEST}); "
            "icbpl never replaces such a folder: pass a new or empty folder"
        )
    if not overwrite:
        raise PipelineError(
            f"--out {out} holds the results of an earlier icbpl run; pass --overwrite to replace "
            "them (files icbpl did not write are kept), or another --out"
        )


class _Lock:
    """An exclusive, non-blocking lock file holding the owner's pid."""

    def __init__(self, path: Path, out: Path) -> None:
        self.path, self.out = path, out
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise PipelineError(
                    f"--out {self.out} is being written by another icbpl run (pid {pid}); wait "
                    "for it to finish or pass another --out"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its previous owner unlinked after we opened it
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return
            os.close(fd)
        raise PipelineError(f"could not lock {self.path}; try again")

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders ``a`` and ``b`` atomically; ``False`` where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc != 0:
        logger.debug("renameat2 failed (errno %d); using two renames", ctypes.get_errno())
        return False
    return True


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _files(folder: Path) -> list[str]:
    """Relative POSIX paths of every file (and link) under ``folder``, links not followed."""
    out = []
    for root, dirs, names in os.walk(folder):
        base = Path(root)
        out += [(base / n).relative_to(folder).as_posix() for n in names]
        out += [(base / d).relative_to(folder).as_posix() for d in dirs if (base / d).is_symlink()]
    return sorted(f for f in out if f != MANIFEST)


def _retire(old: Path, into: Path | None) -> None:
    """Remove the files ``old``'s manifest lists (and the manifest); move every other file into
    ``into``. Whatever cannot be moved stays, in ``old`` renamed to a visible name."""
    listed = listed_files(old)
    for rel in _files(old):
        src = old / rel
        if rel in listed:
            src.unlink()
            continue
        dst = into / rel if into is not None else None
        if dst is not None and not (dst.exists() or dst.is_symlink()):
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.rename(src, dst)
    with contextlib.suppress(FileNotFoundError):
        (old / MANIFEST).unlink()
    for root, _dirs, _names in sorted(os.walk(old), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(root)
    if old.exists():
        kept = old.with_name(f"{old.name.lstrip('.')}-kept")
        os.rename(old, kept)
        logger.warning("files icbpl did not write could not be moved; they are kept in %s", kept)


class ResultsFolder:
    """Context manager: lock ``out``, yield a staging folder, swap it in on a clean exit.

    Args:
        out: the results folder (created with its parents when missing).
        overwrite: allow replacing an earlier icbpl run's results (never a foreign folder).

    Raises:
        PipelineError: ``out`` is a file, a foreign folder, earlier results without
            ``overwrite``, or locked by another run.
    """

    def __init__(self, out: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.out = Path(out)
        self.overwrite = overwrite
        name = self.out.name
        self._lock = _Lock(self.out.with_name(f".{name}.icbpl-lock"), self.out)
        self.staging = self.out.with_name(f".{name}.icbpl-staging-{os.getpid()}")
        self._previous = self.out.with_name(f".{name}.icbpl-previous")

    def __enter__(self) -> Path:
        if not self.out.name:
            raise PipelineError(f"--out {self.out} has no folder name; pass e.g. ./results")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self._recover()
            check_out_dir(self.out, overwrite=self.overwrite)
            self.staging.mkdir()
        except BaseException:
            self._lock.release()
            raise
        return self.staging

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._commit()
            else:
                shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self._lock.release()

    def _recover(self) -> None:
        """Undo what a killed run left beside ``out`` (we hold the lock: no run is using it)."""
        if self._previous.is_dir() and not self.out.exists():
            os.rename(self._previous, self.out)  # killed between the two renames of a swap
        for stale in self.out.parent.glob(f".{self.out.name}.icbpl-*"):
            if not stale.is_dir() or stale.is_symlink() or stale == self._previous:
                continue
            if read_manifest(stale) is None:
                shutil.rmtree(stale)  # a staging folder: only files of the killed run
            else:
                into = self.out if read_manifest(self.out) is not None else None
                _retire(stale, into)

    def _commit(self) -> None:
        write_manifest(self.staging, _files(self.staging))
        out, staging = self.out, self.staging
        if not out.exists() or (out.is_dir() and not any(out.iterdir())):
            os.replace(staging, out)
        else:
            if not _exchange(staging, out):
                os.rename(out, self._previous)
                os.rename(staging, out)
                os.rename(self._previous, staging)
            _retire(staging, out)
        _fsync_dir(out.parent)


def refuse_run_output(out: Path, run: Path) -> None:
    """Raise PipelineError when ``out`` is a file of ``run`` or of any icbpl results folder."""
    target = out.expanduser().resolve()
    if target.parent == run.expanduser().resolve() and target.name in (*RUN_OUTPUTS, MANIFEST):
        owner: Path | None = target.parent
    else:
        owner = next(
            (
                folder
                for folder in list(target.parents)[:4]
                if target.relative_to(folder).as_posix() in listed_files(folder)
            ),
            None,
        )
    if owner is not None:
        raise PipelineError(
            f"--out {out} is a file of the icbpl results folder {owner}; predict never writes "
            f"over a run's own outputs: pass another file, e.g. {owner / 'predictions.csv'}"
        )
