"""Registry of dataset loaders and the `load_dataset` front door."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icbpl.data._base import DataError, ImageSource, check_split
from icbpl.data.folder import ImageFolder

Loader = Callable[..., ImageSource]


@dataclass(frozen=True)
class DatasetInfo:
    """One registered dataset: how to load it and which paths it recognises."""

    name: str
    loader: Loader  # loader(root: Path, split: str, **kwargs) -> ImageSource
    splits: tuple[str, ...]
    default_split: str
    description: str
    claims: Callable[[Path], bool] | None = None  # True for a path that is this dataset


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(
    name: str,
    *,
    description: str,
    splits: tuple[str, ...] = ("train", "test", "all"),
    default_split: str = "train",
    claims: Callable[[Path], bool] | None = None,
) -> Callable[[Loader], Loader]:
    """Register ``loader(root, split, **kwargs) -> ImageSource`` under ``name``.

    ``root`` is the folder holding the dataset's files (or the dataset folder or archive
    itself); ``claims(path)`` lets `load_dataset` recognise a path given instead of a name.
    ``splits`` are those ``split`` may name (``"all"`` is train + test).
    """

    def decorator(loader: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is already registered")
        _REGISTRY[name] = DatasetInfo(name, loader, splits, default_split, description, claims)
        return loader

    return decorator


def list_datasets() -> list[str]:
    """Names accepted by `load_dataset`."""
    return sorted(_REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of ``name`` (error lists the known names)."""
    if name not in _REGISTRY:
        raise DataError(
            f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}, "
            "or pass the path of a folder of images"
        )
    return _REGISTRY[name]


def _default_root(name: str) -> Path:
    env = os.environ.get("ICBPL_DATA")
    if not env:
        raise DataError(
            f"no root given for dataset {name!r}; pass root='folder holding its files' or set "
            "the ICBPL_DATA environment variable"
        )
    return Path(env).expanduser()


def load_dataset(
    name_or_path: str | os.PathLike[str],
    split: str | None = None,
    root: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> ImageSource:
    """Load a registered dataset by name, or a folder / archive / file by path.

    Args:
        name_or_path: a name from `list_datasets()` (files looked up under ``root``), a path a
            registered loader recognises (e.g. ``cifar10-jpg.tar.gz``, ``mnist.npz``,
            ``cifar-10-batches-py``), or any folder of images (`ImageFolder`).
        split: ``"train"``, ``"test"``, ``"all"`` (train + test, as deep-clustering papers use
            for CIFAR-10) or a dataset-specific split; default: the dataset's default
            (``"train"``), or the whole folder for a plain folder (a split there names a
            sub-folder).
        root: folder holding the dataset's files; default ``$ICBPL_DATA``.
        **kwargs: passed to the loader (e.g. ``label_type="coarse"`` for CIFAR-100, ``cache``,
            or `ImageFolder` options).
    """
    name = os.fspath(name_or_path)
    if name in _REGISTRY:
        info = _REGISTRY[name]
        base = Path(root).expanduser() if root is not None else _default_root(name)
        if not base.exists():
            raise DataError(f"root {base} for dataset {name!r} does not exist; check the path")
        chosen = check_split(split or info.default_split, info.splits, name)
        return info.loader(base, chosen, **kwargs)
    path = Path(name).expanduser()
    if root is not None and not path.is_absolute() and not path.exists():
        path = Path(root).expanduser() / path
    if not path.exists():
        dataset_info(name)  # raises, listing the names
    for info in _REGISTRY.values():
        if info.claims is not None and info.claims(path):
            chosen = check_split(split or info.default_split, info.splits, info.name)
            return info.loader(path, chosen, **kwargs)
    if path.is_dir():
        if split is None:
            return ImageFolder(path, **kwargs)
        if not (path / split).is_dir():
            raise DataError(
                f"split={split!r} asks for the sub-folder {path / split}, which does not exist; "
                "pass split=None to use the whole folder"
            )
        return ImageFolder(path / split, **kwargs)
    raise DataError(
        f"do not know how to read {path}; expected a folder of images or a file of a known "
        f"dataset ({', '.join(list_datasets())})"
    )
