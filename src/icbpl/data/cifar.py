"""CIFAR-10 and CIFAR-100 in their official formats (python pickles, binary) and the JPEG copy.

The official "python version" files are Python pickles. They are read with a restricted
unpickler that only rebuilds plain containers and numpy arrays, so a tampered file fails
instead of running code; still, only the known file names are opened.
"""

from __future__ import annotations

import codecs
import io
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from icbpl.data._base import ArraySource, DataError, file_identity
from icbpl.data._imageio import decode_many
from icbpl.data._packed import cache_dir_for, iter_members, load_cached, save_cached, stack_images
from icbpl.data._registry import register_dataset

logger = logging.getLogger(__name__)

CIFAR10_CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()
_ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only callables a CIFAR pickle may name: numpy array rebuilding, and bytes from str
    (``_codecs.encode``, which Python 3 writes for bytes under pickle protocol 2)."""
    try:
        from numpy._core.multiarray import _reconstruct, scalar
        from numpy._core.numeric import _frombuffer  # type: ignore[attr-defined]
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    return allowed


class _ArraysOnlyUnpickler(pickle.Unpickler):
    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from a CIFAR pickle: official CIFAR files hold "
            "only dicts, lists and numpy arrays; re-download the official files"
        )


def unpickle_official(data: bytes, name: str) -> dict[bytes, Any]:
    """Read one official CIFAR python-version file (bytes keys, numpy arrays only)."""
    try:
        obj = _ArraysOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"cannot read CIFAR file {name}: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR file {name} holds a {type(obj).__name__}, expected a dict")
    return obj


def _images(flat: Any, name: str) -> np.ndarray:
    arr = np.asarray(flat, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] != 3072:
        raise DataError(f"CIFAR file {name}: data of shape {arr.shape}, expected (N, 3072)")
    return arr.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _bin_records(data: bytes, n_label: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    rec = n_label + 3072
    if len(data) % rec:
        raise DataError(f"CIFAR binary file {name}: {len(data)} bytes, not a multiple of {rec}")
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, rec)
    return _images(raw[:, n_label:], name), raw[:, :n_label].astype(np.int64)


class Layout(NamedTuple):
    """One way a dataset's files are laid out: a folder (holding ``marker``) or an archive."""

    kind: str
    folder: str
    marker: str
    archive: str


def locate(root: Path, layouts: list[Layout], dataset: str) -> tuple[str, Path]:
    """(kind, folder-or-archive) of the first layout found at or under ``root``."""
    if root.is_file():
        for lay in layouts:
            if root.name in (lay.archive, *(lay.folder + ext for ext in _ARCHIVES)):
                return lay.kind, root
        raise DataError(
            f"{root.name} is not a known {dataset} archive; expected one of "
            f"{', '.join(lay.archive for lay in layouts)}"
        )
    for lay in layouts:
        marker = root / lay.marker
        if marker.is_dir() if lay.kind == "jpg" else marker.is_file():
            return lay.kind, root
        if (root / lay.folder).is_dir():
            return lay.kind, root / lay.folder
        for name in (lay.archive, *(lay.folder + ext for ext in _ARCHIVES)):
            if (root / name).is_file():
                return lay.kind, root / name
    expected = ", ".join(f"{lay.folder}/ or {lay.archive}" for lay in layouts)
    raise DataError(f"no {dataset} files found under {root}; expected one of: {expected}")


def _read_named(source: Path, names: set[str]) -> dict[str, bytes]:
    found = {Path(n).name: b for n, b in iter_members(source, lambda n: Path(n).name in names)}
    return found


def _official(
    source: Path,
    kind: str,
    split: str,
    files: dict[str, list[str]],
    label_index: int,
    meta_file: str,
    meta_key: bytes,
    dataset: str,
) -> ArraySource:
    """Shared body of the CIFAR-10/100 official-format loaders."""
    wanted = [f for s in ("train", "test") if split in (s, "all") for f in files[s]]
    blobs = _read_named(source, {*wanted, meta_file})
    missing = [f for f in wanted if f not in blobs]
    if missing:
        raise DataError(f"{dataset}: missing {', '.join(missing)} in {source}; re-extract it")
    xs, ys, ids = [], [], []
    for s in ("train", "test"):
        offset = 0
        for f in files[s] if split in (s, "all") else []:
            if kind == "py":
                d = unpickle_official(blobs[f], f)
                key = (b"labels", b"fine_labels", b"coarse_labels")[label_index]
                if key not in d or b"data" not in d:
                    raise DataError(f"{dataset} file {f} lacks {key!r} or b'data'; re-download it")
                x, y = _images(d[b"data"], f), np.asarray(d[key], dtype=np.int64)
            else:
                x, lab = _bin_records(blobs[f], 1 if label_index == 0 else 2, f)
                y = lab[:, -1] if label_index in (0, 1) else lab[:, 0]
            xs.append(x)
            ys.append(y)
            ids += [f"{dataset}/{s}/{offset + i:06d}" for i in range(len(x))]
            offset += len(x)
    names = None
    if meta_file in blobs:
        if kind == "py":
            names = [b.decode() for b in unpickle_official(blobs[meta_file], meta_file)[meta_key]]
        else:
            names = [ln.strip() for ln in blobs[meta_file].decode().splitlines() if ln.strip()]
    elif dataset == "cifar10":
        names = CIFAR10_CLASSES
    ident = file_identity([source] if source.is_file() else [source / f for f in wanted])
    return ArraySource(
        np.concatenate(xs),
        np.concatenate(ys),
        class_names=names,
        ids=ids,
        fingerprint=f"{dataset}-{kind}-{split}-{ident}",  # pixels only: labels do not count
    )


_JPG = re.compile(r"(?:^|/)(train|test)/([^/]+)/([^/]+\.jpe?g)$", re.IGNORECASE)


def _jpeg_copy(source: Path, split: str, cache: bool | str | os.PathLike[str]) -> ArraySource:
    """The `{train,test}/<class>/NNNN.jpg` layout, from a folder or an archive, cached as .npy."""
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    ident = file_identity(files)
    folder = cache_dir_for(cache, "cifar10-jpg", ident)
    cached = load_cached(folder)
    if cached is None:
        members = iter_members(source, lambda n: _JPG.search(n) is not None)
        items = [(m.groups(), b) for n, b in members if (m := _JPG.search(n))]
        if not items:
            raise DataError(f"no train/<class>/*.jpg or test/<class>/*.jpg files in {source}")
        classes = sorted({g[1] for g, _ in items})
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"classes": classes, "skipped": []}
        for s in ("train", "test"):
            part = sorted((t for t in items if t[0][0] == s), key=lambda t: t[0])
            names = [f"{g[0]}/{g[1]}/{g[2]}" for g, _ in part]
            x, kept, skipped = stack_images(decode_many([b for _, b in part]), names, (32, 32))
            arrays[f"{s}_x"] = x
            arrays[f"{s}_y"] = np.array([classes.index(part[i][0][1]) for i in kept], np.int64)
            meta[f"{s}_ids"] = [f"cifar10-jpg/{names[i]}" for i in kept]
            meta["skipped"] += skipped
        save_cached(folder, arrays, meta)
    else:
        arrays, meta = cached
    parts = ("train", "test") if split == "all" else (split,)
    xs = [arrays[f"{p}_x"] for p in parts]
    logger.info("CIFAR-10 JPEG copy (lossy, quality 75): report results as 'CIFAR-10 (JPEG copy)'")
    return ArraySource(
        xs[0] if len(xs) == 1 else np.concatenate(xs),
        np.concatenate([arrays[f"{p}_y"] for p in parts]),
        class_names=list(meta["classes"]),
        ids=[i for p in parts for i in meta[f"{p}_ids"]],
        fingerprint=f"cifar10-jpg-{split}-{ident}",
        skipped=[(str(p), str(r)) for p, r in meta["skipped"]],
    )


_C10 = [
    Layout("py", "cifar-10-batches-py", "data_batch_1", "cifar-10-python.tar.gz"),
    Layout("bin", "cifar-10-batches-bin", "data_batch_1.bin", "cifar-10-binary.tar.gz"),
    Layout("jpg", "cifar10-jpg", "train", "cifar10-jpg.tar.gz"),
]
_C10_FILES = {
    "py": {"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]},
    "bin": {"train": [f"data_batch_{k}.bin" for k in range(1, 6)], "test": ["test_batch.bin"]},
}


def _claims_cifar10(path: Path) -> bool:
    return path.name.startswith(("cifar-10-", "cifar10-jpg"))


@register_dataset(
    "cifar10",
    claims=_claims_cifar10,
    description="CIFAR-10: official python/binary batches, or the JPEG copy (cifar10-jpg)",
)
def load_cifar10(
    root: Path, split: str, *, cache: bool | str | os.PathLike[str] = True
) -> ArraySource:
    """CIFAR-10 from ``root``: lossless official files preferred, else the JPEG copy."""
    kind, source = locate(root, _C10, "CIFAR-10")
    if kind == "jpg":
        return _jpeg_copy(source, split, cache)
    meta = "batches.meta" if kind == "py" else "batches.meta.txt"
    return _official(source, kind, split, _C10_FILES[kind], 0, meta, b"label_names", "cifar10")


_C100 = [
    Layout("py", "cifar-100-python", "train", "cifar-100-python.tar.gz"),
    Layout("bin", "cifar-100-binary", "train.bin", "cifar-100-binary.tar.gz"),
]


def _claims_cifar100(path: Path) -> bool:
    return path.name.startswith("cifar-100-")


@register_dataset(
    "cifar100",
    claims=_claims_cifar100,
    description="CIFAR-100 (official python or binary); label_type='fine' (100) or 'coarse' (20)",
)
def load_cifar100(
    root: Path, split: str, *, label_type: Literal["fine", "coarse"] = "fine"
) -> ArraySource:
    """CIFAR-100 from ``root``, labelled by its 100 fine classes or 20 coarse super-classes."""
    if label_type not in ("fine", "coarse"):
        raise DataError(f"label_type should be 'fine' or 'coarse', got {label_type!r}")
    kind, source = locate(root, _C100, "CIFAR-100")
    ext = "" if kind == "py" else ".bin"
    files = {"train": [f"train{ext}"], "test": [f"test{ext}"]}
    index = 1 if label_type == "fine" else 2
    if kind == "py":
        meta, key = "meta", (b"fine_label_names" if index == 1 else b"coarse_label_names")
    else:
        meta, key = f"{label_type}_label_names.txt", b""
    return _official(source, kind, split, files, index, meta, key, "cifar100")
