"""Helpers shared by pre-training and fine-tuning: images held as one tensor, batches, seeded
generators and the default batched augmentation (devices and precision: `icbpl.util.device`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from icbpl.features.augment import BatchAugment

logger = logging.getLogger(__name__)

#: ``augment(images, generator)``: float images in [0, 1], (B, 3, H, W) -> same shape.
AugmentFn = Callable[[Tensor, torch.Generator], Tensor]


def new_generator(device: torch.device, seed: int) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def images_as_tensor(source: Any, size: int) -> Tensor:
    """All images of ``source`` as one ``(N, 3, size, size)`` uint8 CPU tensor.

    ``source`` is an :class:`icbpl.data.ImageSource` (its ``as_array()`` fast path is used when it
    returns an array), or a uint8 array/tensor shaped ``(N, 3, H, W)`` or ``(N, H, W, 3)``. Images
    of another size are resized (bilinear, antialiased).
    """
    if isinstance(source, Tensor | np.ndarray):
        x = torch.as_tensor(np.asarray(source) if isinstance(source, np.ndarray) else source)
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(
                f"image arrays should be uint8 (N, 3, H, W) or (N, H, W, 3); got dtype={x.dtype}"
                f" shape={tuple(x.shape)}"
            )
        if x.shape[1] != 3 and x.shape[3] == 3:
            x = x.permute(0, 3, 1, 2)
        return _resize_uint8(x.contiguous(), size)
    as_array = getattr(source, "as_array", None)
    arr = as_array() if callable(as_array) else None
    if arr is not None:
        return _resize_uint8(torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2), size)
    n = len(source)
    out = torch.empty((n, 3, size, size), dtype=torch.uint8)
    for i in range(n):
        out[i] = _resize_uint8(source.load(i).unsqueeze(0), size)[0]
    return out


def _resize_uint8(x: Tensor, size: int, chunk: int = 4096) -> Tensor:
    if x.shape[-2:] == (size, size):
        return x.contiguous()
    out = torch.empty((x.shape[0], 3, size, size), dtype=torch.uint8, device=x.device)
    for s in range(0, x.shape[0], chunk):
        f = x[s : s + chunk].float()
        r = F.interpolate(
            f, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out[s : s + chunk] = r.round().clamp(0, 255).to(torch.uint8)
    return out


def to_float(images: Tensor, channels_last: bool) -> Tensor:
    """uint8 ``(B, 3, H, W)`` -> float in [0, 1] (channels-last memory when asked)."""
    x = images.float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def default_augment(size: int, strength: str = "strong") -> AugmentFn:
    """Batched augmentation (:class:`icbpl.features.augment.BatchAugment`), pre-training or ICBPL.

    ``strong``: the Barlow Twins/SimCLR CIFAR recipe (random resized crop of 8-100% of the area,
    flip, colour jitter 0.4/0.4/0.2/0.1 with p=0.8, grayscale p=0.2; Gaussian blur p=0.5 only
    above 64 px, as small-image recipes drop it). ``weak``: ``BatchAugment``'s defaults (crop of
    20-100%, the views of ICBPL's augmentation-consistency loss).
    """
    if strength == "strong":
        return BatchAugment(
            size,
            scale=(0.08, 1.0),
            jitter=(0.4, 0.4, 0.2, 0.1),
            blur_p=0.0 if size <= 64 else 0.5,
        )
    if strength == "weak":
        return BatchAugment(size)
    raise ValueError(f"strength={strength!r}; expected 'strong' or 'weak'")


def batches(order: Tensor, batch_size: int, drop_last: bool) -> Iterator[Tensor]:
    """Consecutive ``batch_size`` slices of ``order`` (a short last one dropped if asked)."""
    n = order.shape[0]
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for s in range(0, stop, batch_size):
        yield order[s : s + batch_size]
