"""MNIST and Fashion-MNIST (official idx files, plain or .gz; or Keras-style ``mnist.npz``),
and generic ``.npz`` files with ``x_train``/``y_train``/``x_test``/``y_test`` arrays."""

from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path

import numpy as np

from icbpl.data._base import ArraySource, DataError, file_identity, split_source
from icbpl.data._registry import register_dataset

logger = logging.getLogger(__name__)

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one idx file (optionally gzip-compressed) into an array of its declared shape."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an idx file (bad magic {data[:4].hex()}); re-download it")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=_IDX_DTYPES[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"{path}: header declares shape {dims} but holds {arr.size} values")
    return arr.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    alt = stem.replace("-idx", ".idx")  # some mirrors write train-images.idx3-ubyte
    for name in (stem, f"{stem}.gz", alt, f"{alt}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _from_idx(folder: Path, split: str, dataset: str, classes: list[str]) -> ArraySource:
    parts = ("train", "test") if split == "all" else (split,)
    xs, ys, used = [], [], []
    for s in parts:
        files = [_find_idx(folder, stem) for stem in _IDX_FILES[s]]
        if None in files:
            raise DataError(f"{dataset}: {' and '.join(_IDX_FILES[s])} (or .gz) not in {folder}")
        x, y = read_idx(files[0]), read_idx(files[1])  # type: ignore[arg-type]
        if len(x) != len(y):
            raise DataError(f"{dataset} {s}: {len(x)} images but {len(y)} labels")
        xs.append(x)
        ys.append(y.astype(np.int64))
        used += files
    ident = file_identity(used)  # type: ignore[arg-type]
    return split_source(
        dataset, parts, xs, ys, class_names=classes, fingerprint=f"{dataset}-idx-{split}-{ident}"
    )


def _from_npz(path: Path, split: str, dataset: str, classes: list[str] | None) -> ArraySource:
    parts = ("train", "test") if split == "all" else (split,)
    with np.load(path, allow_pickle=False) as z:
        missing = [k for s in parts for k in (f"x_{s}", f"y_{s}") if k not in z.files]
        if missing:
            raise DataError(f"{path} lacks {', '.join(missing)} (has {', '.join(z.files)})")
        xs = [z[f"x_{s}"] for s in parts]
        ys = [z[f"y_{s}"].astype(np.int64).reshape(-1) for s in parts]
    ident = file_identity([path])
    return split_source(
        dataset, parts, xs, ys, class_names=classes, fingerprint=f"{dataset}-npz-{split}-{ident}"
    )


def _load_mnist_like(
    root: Path,
    split: str,
    dataset: str,
    subdirs: tuple[str, ...],
    npz: str | None,
    classes: list[str],
) -> ArraySource:
    if root.is_file():
        return _from_npz(root, split, dataset, classes)
    if npz and (root / npz).is_file():
        return _from_npz(root / npz, split, dataset, classes)
    for folder in (root, *(root / d for d in subdirs)):
        if _find_idx(folder, _IDX_FILES["train"][0]) or _find_idx(folder, _IDX_FILES["test"][0]):
            return _from_idx(folder, split, dataset, classes)
    raise DataError(
        f"no {dataset} files under {root}; expected {npz + ' or ' if npz else ''}the official "
        f"idx files (e.g. {_IDX_FILES['train'][0]}.gz) in {root} or one of {', '.join(subdirs)}"
    )


@register_dataset(
    "mnist",
    claims=lambda p: p.name in ("mnist.npz", "mnist"),
    description="MNIST: official idx files (.gz or not) or mnist.npz",
)
def load_mnist(root: Path, split: str) -> ArraySource:
    """MNIST from ``root`` (``mnist.npz`` preferred, else idx files)."""
    return _load_mnist_like(
        root, split, "mnist", ("mnist", "MNIST/raw"), "mnist.npz", MNIST_CLASSES
    )


@register_dataset(
    "fashion-mnist",
    claims=lambda p: p.is_dir() and p.name in ("fashion-mnist", "fashion_mnist", "FashionMNIST"),
    description="Fashion-MNIST: official idx files (.gz or not)",
)
def load_fashion_mnist(root: Path, split: str) -> ArraySource:
    """Fashion-MNIST from ``root`` (idx files in it or in ``fashion-mnist/``)."""
    subdirs = ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw")
    return _load_mnist_like(root, split, "fashion-mnist", subdirs, None, FASHION_CLASSES)


@register_dataset(
    "npz",
    claims=lambda p: p.is_file() and p.suffix == ".npz",
    description="any .npz with x_train, y_train, x_test, y_test arrays (root = the file)",
)
def load_npz(root: Path, split: str) -> ArraySource:
    """Images and labels from a ``.npz`` file (Keras layout); no class names."""
    if not root.is_file():
        raise DataError(f"dataset 'npz' needs root=<the .npz file>, got the folder {root}")
    return _from_npz(root, split, root.stem, None)
