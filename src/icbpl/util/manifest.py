"""The marker of an icbpl results folder: ``.icbpl-manifest.json``, the files a run wrote.

A folder is an icbpl results folder only when it holds a valid manifest; icbpl only ever removes
or replaces the files its manifest lists (relative POSIX paths inside the folder, never ``..``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from icbpl.util.atomic import atomic_write_text

__all__ = ["MANIFEST", "add_to_manifest", "listed_files", "read_manifest", "write_manifest"]

MANIFEST = ".icbpl-manifest.json"
FORMAT = "icbpl.results"
VERSION = 1


def _safe(entry: Any) -> bool:
    if not isinstance(entry, str) or not entry or "\\" in entry or "\0" in entry:
        return False
    p = PurePosixPath(entry)
    return not p.is_absolute() and ".." not in p.parts and entry != MANIFEST


def read_manifest(folder: str | os.PathLike[str]) -> list[str] | None:
    """The files the manifest of ``folder`` lists, or ``None`` when it has no valid manifest.

    A manifest of the wrong format or version, or one listing a path outside the folder, counts
    as no manifest (the folder is then not treated as icbpl's).
    """
    path = Path(folder) / MANIFEST
    try:
        if path.is_symlink() or not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    files = data.get("files")
    if data.get("version") != VERSION or not isinstance(files, list):
        return None
    if not all(_safe(f) for f in files):
        return None
    return list(files)


def listed_files(folder: str | os.PathLike[str]) -> set[str]:
    """The manifest's files as a set (empty without a manifest)."""
    return set(read_manifest(folder) or [])


def write_manifest(folder: str | os.PathLike[str], files: list[str]) -> Path:
    """Write the manifest of ``folder`` listing ``files`` (atomically)."""
    from icbpl import __version__

    bad = [f for f in files if not _safe(f)]
    if bad:
        raise ValueError(f"manifest entries should be relative paths inside the folder: {bad}")
    data = {
        "format": FORMAT,
        "version": VERSION,
        "icbpl_version": __version__,
        "files": sorted(set(files)),
    }
    return atomic_write_text(Path(folder) / MANIFEST, json.dumps(data, indent=1) + "\n")


def add_to_manifest(folder: str | os.PathLike[str], files: list[str]) -> bool:
    """Add ``files`` to the manifest of ``folder``, if it has one; return whether it had."""
    listed = read_manifest(folder)
    if listed is None:
        return False
    write_manifest(folder, listed + list(files))
    return True
