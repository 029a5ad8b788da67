"""STL-10, official binary version (``stl10_binary/``).

Each ``*_X.bin`` holds uint8 images of 3x96x96 stored column-major (per channel, the pixels
run down the columns), so a record read as ``(3, 96, 96)`` is ``(C, W, H)`` and is transposed
to ``(H, W, C)``. Labels in ``*_y.bin`` run 1..10 and become 0..9. The files are memory-mapped,
so even the 100,000-image unlabelled split costs no RAM until images are read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from icbpl.data._base import ArraySource, DataError, file_identity, split_source
from icbpl.data._registry import register_dataset

logger = logging.getLogger(__name__)

STL10_CLASSES = "airplane bird car cat deer dog horse monkey ship truck".split()
SPLITS = ("train", "test", "all", "unlabeled")
_SIDE = 96
_RECORD = 3 * _SIDE * _SIDE


def read_stl10_images(path: Path) -> np.ndarray:
    """``(N, 96, 96, 3)`` uint8 view (memory-mapped) of one ``*_X.bin`` file."""
    size = path.stat().st_size
    if size == 0 or size % _RECORD:
        raise DataError(f"{path}: {size} bytes is not a positive multiple of {_RECORD} (3x96x96)")
    raw = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, 3, _SIDE, _SIDE)
    return raw.transpose(0, 3, 2, 1)


def read_stl10_labels(path: Path) -> np.ndarray:
    """Labels 0..9 from one ``*_y.bin`` file (stored 1..10)."""
    y = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{path}: labels should run 1..10, found {y.min() + 1}..{y.max() + 1}")
    return y


def _folder(root: Path) -> Path:
    for folder in (root, root / "stl10_binary"):
        if (folder / "train_X.bin").is_file() or (folder / "unlabeled_X.bin").is_file():
            return folder
    raise DataError(
        f"no STL-10 binary files under {root}; expected stl10_binary/train_X.bin (extract "
        "stl10_binary.tar.gz there)"
    )


@register_dataset(
    "stl10",
    splits=SPLITS,
    claims=lambda p: p.is_dir() and p.name == "stl10_binary",
    description="STL-10 binary: train (5k), test (8k), all (13k), unlabeled (100k, no labels)",
)
def load_stl10(root: Path, split: str) -> ArraySource:
    """STL-10 from ``root`` (the ``stl10_binary`` folder or its parent)."""
    folder = _folder(root)
    parts = ("train", "test") if split == "all" else (split,)
    xs, ys, used = [], [], []
    for s in parts:
        x_path = folder / f"{s}_X.bin"
        if not x_path.is_file():
            raise DataError(f"STL-10 split {s!r}: {x_path} not found; re-extract stl10_binary")
        xs.append(read_stl10_images(x_path))
        used.append(x_path)
        if s != "unlabeled":
            y_path = folder / f"{s}_y.bin"
            if not y_path.is_file():
                raise DataError(f"STL-10 split {s!r}: {y_path} not found")
            ys.append(read_stl10_labels(y_path))
            used.append(y_path)
            if len(ys[-1]) != len(xs[-1]):
                raise DataError(f"STL-10 {s}: {len(xs[-1])} images but {len(ys[-1])} labels")
    names_file = folder / "class_names.txt"
    names = STL10_CLASSES
    if names_file.is_file():
        names = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
    fingerprint = f"stl10-{split}-{file_identity(used)}"
    return split_source("stl10", parts, xs, ys, class_names=names, fingerprint=fingerprint)
