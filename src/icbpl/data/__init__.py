"""Image sources and dataset loaders (see docs/DESIGN.md, "Images").

A source is a random-access list of RGB images (`ImageSource`): `ImageFolder` for a folder of
files, `ArraySource` for images in memory, and registered loaders for the official formats of
CIFAR-10/100, STL-10, MNIST, Fashion-MNIST and Tiny-ImageNet, reached through `load_dataset`.
"""

from __future__ import annotations

from icbpl.data import cifar, mnist, stl10, tinyimagenet  # noqa: F401  (register loaders)
from icbpl.data._base import (
    ArraySource,
    DataError,
    ImageSource,
    cache_root,
    summarize,
)
from icbpl.data._imageio import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, open_image, to_rgb_array
from icbpl.data._registry import (
    DatasetInfo,
    dataset_info,
    list_datasets,
    load_dataset,
    register_dataset,
)
from icbpl.data.folder import ImageFolder

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ArraySource",
    "DataError",
    "DatasetInfo",
    "ImageFolder",
    "ImageSource",
    "cache_root",
    "dataset_info",
    "list_datasets",
    "load_dataset",
    "open_image",
    "register_dataset",
    "summarize",
    "to_rgb_array",
]
