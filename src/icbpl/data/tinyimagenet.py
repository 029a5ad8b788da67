"""Tiny-ImageNet-200 (official layout), from the extracted folder or a zip / tar(.gz) archive.

Layout: ``tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG,
val/images/*.JPEG, val/val_annotations.txt, test/images/*.JPEG}``. Classes follow the order of
``wnids.txt``; class names are the first synonym in ``words.txt``. Images (64x64) are decoded
once into a uint8 array cached as ``.npy`` (see `icbpl.data._packed`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from icbpl.data._base import ArraySource, DataError, file_identity
from icbpl.data._imageio import decode_many
from icbpl.data._packed import cache_dir_for, iter_members, load_cached, save_cached, stack_images
from icbpl.data._registry import register_dataset

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "all", "test")
_PATTERNS = {
    "train": re.compile(r"(?:^|/)train/(n\d+)/images/([^/]+\.jpe?g)$", re.IGNORECASE),
    "val": re.compile(r"(?:^|/)val/images/([^/]+\.jpe?g)$", re.IGNORECASE),
    "test": re.compile(r"(?:^|/)test/images/([^/]+\.jpe?g)$", re.IGNORECASE),
}
_TEXT = re.compile(r"(?:^|/)(wnids\.txt|words\.txt|val_annotations\.txt)$")


def _source(root: Path) -> Path:
    if root.is_file() or (root / "wnids.txt").is_file():
        return root
    if (root / "tiny-imagenet-200").is_dir():
        return root / "tiny-imagenet-200"
    archives = sorted(root.glob("tiny-imagenet-200*.zip")) + sorted(
        root.glob("tiny-imagenet-200*.tar*")
    )
    if archives:
        return archives[0]
    raise DataError(
        f"no Tiny-ImageNet files under {root}; expected tiny-imagenet-200/ (with wnids.txt) or "
        "tiny-imagenet-200.zip"
    )


def _class_names(wnids: list[str], words_txt: str | None) -> list[str]:
    words = {}
    for line in (words_txt or "").splitlines():
        wnid, _, text = line.partition("\t")
        words[wnid.strip()] = text.split(",")[0].strip()
    names = [words.get(w) or w for w in wnids]
    if len(set(names)) < len(names):  # a repeated first synonym: keep them apart
        names = [f"{n} ({w})" for n, w in zip(names, wnids, strict=True)]
    return names


def _decode_split(source: Path, split: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read one split's images and text files in one pass; decode; arrays + metadata."""
    pattern = _PATTERNS[split]
    texts: dict[str, str] = {}
    images: list[tuple[str, re.Match[str], bytes]] = []
    for name, data in iter_members(source, lambda n: bool(pattern.search(n) or _TEXT.search(n))):
        if t := _TEXT.search(name):
            texts[t.group(1)] = data.decode("utf-8", "replace")
        elif m := pattern.search(name):
            images.append((name, m, data))
    if not images:
        raise DataError(f"no Tiny-ImageNet {split} images ({pattern.pattern}) in {source}")
    if "wnids.txt" in texts:
        wnids = [w.strip() for w in texts["wnids.txt"].splitlines() if w.strip()]
    else:
        wnids = sorted({m.group(1) for _, m, _ in images}) if split == "train" else []
    index = {w: k for k, w in enumerate(wnids)}
    wanted: dict[str, int] = {}
    if split == "val":
        if "val_annotations.txt" not in texts:
            raise DataError(f"val/val_annotations.txt not found in {source}; re-extract it")
        for line in texts["val_annotations.txt"].splitlines():
            fields = line.split("\t")
            if len(fields) >= 2 and fields[1] in index:
                wanted[fields[0]] = index[fields[1]]
    order = {fname: k for k, fname in enumerate(wanted)}
    skipped: list[tuple[str, str]] = []
    keep: list[tuple[str, bytes, int]] = []
    for name, m, data in images:
        fname = m.group(m.lastindex or 1)
        if split == "train":
            label = index.get(m.group(1), -1)
        else:
            label = wanted.get(fname, -1) if split == "val" else 0
        if label < 0:
            skipped.append((name, "class not listed in wnids.txt / val_annotations.txt"))
        else:
            keep.append((f"tiny-imagenet/{split}/{fname}", data, label))
    if split == "val":
        keep.sort(key=lambda t: order[t[0].rsplit("/", 1)[1]])
    else:
        keep.sort(key=lambda t: (t[2], t[0]))
    ids = [k[0] for k in keep]
    x, kept, bad = stack_images(decode_many([k[1] for k in keep]), ids, (64, 64))
    meta = {
        "ids": [ids[i] for i in kept],
        "classes": _class_names(wnids, texts.get("words.txt")),
        "skipped": skipped + bad,
        "labelled": split != "test",
    }
    return {"x": x, "y": np.array([keep[i][2] for i in kept], dtype=np.int64)}, meta


def _folder_markers(folder: Path) -> list[Path]:
    """Cheap identity of an extracted folder: its .txt files and the image folders (whose
    mtimes change when files are added or removed), not every one of 120,000 images."""
    marks = sorted(folder.glob("*.txt")) + sorted(folder.glob("*/*.txt"))
    subdirs = ("train", "val/images", "test/images")
    return marks + [folder / d for d in subdirs if (folder / d).is_dir()]


@register_dataset(
    "tiny-imagenet",
    splits=SPLITS,
    claims=lambda p: p.name.startswith("tiny-imagenet-200"),
    description="Tiny-ImageNet-200: train (100k), val (10k), all (train+val), test (no labels)",
)
def load_tiny_imagenet(
    root: Path, split: str, *, cache: bool | str | os.PathLike[str] = True
) -> ArraySource:
    """Tiny-ImageNet-200 from ``root`` (folder, its parent, or an archive)."""
    source = _source(root)
    ident = file_identity([source] if source.is_file() else _folder_markers(source))
    xs, ys, ids, skipped = [], [], [], []
    meta: dict[str, Any] = {}
    for s in ("train", "val") if split == "all" else (split,):
        folder = cache_dir_for(cache, f"tiny-imagenet-{s}", ident)
        cached = load_cached(folder)
        if cached is None:
            cached = _decode_split(source, s)
            save_cached(folder, *cached)
        arrays, meta = cached
        xs.append(arrays["x"])
        ys.append(arrays["y"])
        ids += meta["ids"]
        skipped += [(str(p), str(r)) for p, r in meta["skipped"]]
    return ArraySource(
        xs[0] if len(xs) == 1 else np.concatenate(xs),
        np.concatenate(ys) if meta["labelled"] else None,
        class_names=meta["classes"] if meta["labelled"] else None,
        ids=ids,
        fingerprint=f"tiny-imagenet-{split}-{ident}",
        skipped=skipped,
    )
