"""`ImageFolder`: a folder of image files, scanned once, robust to the files found in the wild."""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from icbpl.data._base import DECODE_VERSION, DataError, summarize
from icbpl.data._imageio import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    decode_file,
    open_image,
    probe,
)

logger = logging.getLogger(__name__)

LabelMode = Literal["auto", "folders", "none"]


def _kind(entry: os.DirEntry[str]) -> str:
    """ "dir", "file", "broken" (dangling or looping symlink) or "other" (fifo, socket...)."""
    try:
        if entry.is_dir():
            return "dir"
        if entry.is_file():
            return "file"
    except OSError:  # e.g. a symlink pointing to itself (ELOOP)
        return "broken"
    return "broken" if entry.is_symlink() else "other"


def _walk(
    root: Path,
    recursive: bool,
    include_hidden: bool,
    follow_symlinks: bool,
    extensions: frozenset[str],
    skipped: list[tuple[str, str]],
) -> list[tuple[str, Path]]:
    """(relative posix path, path) of candidate files; rejected entries go to ``skipped``.

    Directory symlinks are followed at most once per real path, so loops end.
    """
    visited = {os.path.realpath(root)}
    stack, found = [root], []
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append((folder.relative_to(root).as_posix(), f"cannot list folder: {exc}"))
            continue
        for e in entries:
            path = Path(e.path)
            rel = path.relative_to(root).as_posix()
            kind = _kind(e)
            if e.name.startswith(".") and not include_hidden:
                skipped.append((rel, "hidden (--include-hidden or include_hidden=True reads it)"))
            elif kind == "dir":
                if not recursive:
                    skipped.append((rel, "sub-folder not scanned (recursive=False)"))
                elif e.is_symlink() and not follow_symlinks:
                    skipped.append((rel, "folder symlink not followed (follow_symlinks=False)"))
                elif (real := os.path.realpath(path)) in visited:
                    skipped.append((rel, "folder symlink to a folder already scanned (loop)"))
                else:
                    visited.add(real)
                    stack.append(path)
            elif kind == "file":
                if path.suffix.lower() in extensions:
                    found.append((rel, path))
                else:
                    skipped.append((rel, "not an image extension"))
            elif kind == "broken":
                skipped.append((rel, "broken symlink (target missing or a loop)"))
            else:
                skipped.append((rel, "not a regular file"))
    return sorted(found)


def _duplicate_groups(rels: list[str], paths: list[Path], sizes: list[int]) -> list[list[str]]:
    """Groups (>= 2) of byte-identical files; only files sharing a size are read and hashed."""
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(sizes):
        by_size[s].append(i)
    groups: dict[str, list[str]] = defaultdict(list)
    for idx in by_size.values():
        if len(idx) < 2:
            continue
        for i in idx:
            h = hashlib.blake2b(digest_size=20)
            with open(paths[i], "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            groups[h.hexdigest()].append(rels[i])
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


class ImageFolder:
    """All images under a folder; class sub-folders, when present, give evaluation labels.

    The folder is scanned once at construction: hidden entries, unsupported extensions, empty,
    corrupt, truncated, non-image and over-large files are rejected and listed in ``skipped``
    as ``(relative path, reason)`` (see `icbpl.data._imageio` for the checks, which decode no
    JPEG or PNG that looks intact). ``load`` never raises for a listed file: should one still
    fail to decode, a grey placeholder of its size is returned, a warning logged and the file
    recorded in ``degraded`` (per process: worker processes each keep their own). Exact
    duplicates are kept and reported in ``duplicate_groups``.

    Args:
        path: the folder.
        recursive: scan sub-folders (directory symlinks are followed once per real path).
        labels: ``"auto"``: labels from class folders when every image sits directly in a
            first-level sub-folder and there are at least 2 of them; ``"folders"``: the same but
            required (error otherwise); ``"none"``: no labels.
        include_hidden: also take names starting with ``"."``.
        follow_symlinks: follow directory symlinks (file symlinks are always read).
        extensions: accepted file name endings, lower case.
        max_pixels: decompression-bomb guard: larger images are skipped. Pillow's own guard
            (``PIL.Image.MAX_IMAGE_PIXELS``, doubled) still applies on top of it.
        validate: ``"fast"`` checks headers and framing only; ``"full"`` decodes every file once
            at scan time (catches corrupt data inside intact framing, at twice the decode cost).
        find_duplicates: detect byte-identical files (reads only files that share a size).
        progress: show a progress bar during the scan.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        recursive: bool = True,
        labels: LabelMode = "auto",
        include_hidden: bool = False,
        follow_symlinks: bool = True,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        validate: Literal["fast", "full"] = "fast",
        find_duplicates: bool = True,
        progress: bool = False,
    ) -> None:
        root = Path(path).expanduser()
        if not root.exists():
            raise DataError(f"image folder {root} does not exist; check the path")
        if not root.is_dir():
            raise DataError(f"{root} is a file, expected a folder of images; pass its parent")
        if labels not in ("auto", "folders", "none"):
            raise DataError(f"labels should be 'auto', 'folders' or 'none', got {labels!r}")
        if validate not in ("fast", "full"):
            raise DataError(f"validate should be 'fast' or 'full', got {validate!r}")
        exts = frozenset(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        self.root = root
        self.max_pixels = max_pixels
        self.skipped: list[tuple[str, str]] = []
        self.degraded: list[tuple[str, str]] = []
        self._failed: dict[int, np.ndarray] = {}
        found = _walk(root, recursive, include_hidden, follow_symlinks, exts, self.skipped)
        self.ids: list[str] = []
        self._paths: list[Path] = []
        sizes: list[int] = []
        digest = hashlib.blake2b(DECODE_VERSION.encode(), digest_size=16)
        for rel, p in tqdm(found, desc=f"scanning {root.name}", disable=not progress):
            reason = probe(p, max_pixels, full=validate == "full")
            if reason is not None:
                self.skipped.append((rel, reason))
                continue
            st = p.stat()
            self.ids.append(rel)
            self._paths.append(p)
            sizes.append(st.st_size)
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode(errors="replace"))
        self._fingerprint = digest.hexdigest()
        if not self.ids:
            raise DataError(
                f"no images found under {root}; supported extensions: {', '.join(sorted(exts))}"
                f" ({len(self.skipped)} entries skipped"
                + (f", e.g. {self.skipped[0][0]}: {self.skipped[0][1]})" if self.skipped else ")")
            )
        self.duplicate_groups = (
            _duplicate_groups(self.ids, self._paths, sizes) if find_duplicates else []
        )
        self.labels, self.class_names = self._folder_labels(labels)
        logger.info(
            "%s: %d images, %d entries skipped, %d groups of duplicates",
            root,
            len(self.ids),
            len(self.skipped),
            len(self.duplicate_groups),
        )

    def _folder_labels(self, mode: LabelMode) -> tuple[np.ndarray | None, list[str] | None]:
        if mode == "none":
            return None, None
        parts = [rel.split("/") for rel in self.ids]
        classes = sorted({p[0] for p in parts if len(p) == 2})
        if all(len(p) == 2 for p in parts) and len(classes) >= 2:
            index = {c: k for k, c in enumerate(classes)}
            return np.array([index[p[0]] for p in parts], dtype=np.int64), classes
        if mode == "folders":
            loose = next((rel for rel, p in zip(self.ids, parts, strict=True) if len(p) != 2), "")
            raise DataError(
                f"labels='folders' needs every image directly inside a first-level class folder "
                f"of {self.root} and at least 2 classes; found {len(classes)} class folder(s)"
                + (f" and an image at {loose!r}" if loose else "")
                + "; move the images into <class>/<file> or pass labels='none'"
            )
        return None, None

    def __len__(self) -> int:
        """Number of images."""
        return len(self.ids)

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, n={len(self)}, skipped={len(self.skipped)})"

    def path(self, i: int) -> Path:
        """File path of image ``i``."""
        return self._paths[i]

    def load(self, i: int) -> Tensor:
        """Image ``i`` as a ``(3, H, W)`` uint8 RGB tensor; never raises for a listed file."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"image index {i} out of range for {len(self)} images")
        i = i % len(self)
        if i in self._failed:
            arr = self._failed[i]
        else:
            try:
                arr = decode_file(self._paths[i], self.max_pixels)
            except ImageDecodeError as exc:
                arr = self._failed[i] = self._placeholder(i, str(exc))
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def _placeholder(self, i: int, reason: str) -> np.ndarray:
        logger.warning("could not decode %s (%s); using a grey placeholder", self.ids[i], reason)
        self.degraded.append((self.ids[i], reason))
        try:
            with open_image(self._paths[i], self.max_pixels) as im:
                w, h = im.size
        except (ImageDecodeError, OSError):
            w = h = 32
        return np.full((h, w, 3), 128, dtype=np.uint8)

    def as_array(self) -> None:
        """Folders have no in-memory array; callers fall back to `load`."""
        return None

    def fingerprint(self) -> str:
        """Hash of (relative path, size, mtime) of every image at scan time: cheap (no content
        read); it misses an edit that keeps both the size and the modification time."""
        return self._fingerprint

    def summary(self) -> str:
        """Counts, skipped files by reason, duplicate groups and load-time failures."""
        return summarize(self)
