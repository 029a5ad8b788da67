"""Helpers shared by pre-training and fine-tuning: devices, precision, images held as one tensor,
batched augmentation, timers. Private: the public names live in :mod:`icbpl.pretrain` and
:mod:`icbpl.finetune`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

#: ``augment(images, generator)``: float images in [0, 1], (B, 3, H, W) -> same shape.
AugmentFn = Callable[[Tensor, torch.Generator], Tensor]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class _Sized(Protocol):
    def __len__(self) -> int: ...

    def load(self, i: int) -> Tensor: ...


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: CUDA, else MPS, else CPU; otherwise ``torch.device(device)``."""
    try:  # the package-wide helper, when installed
        from icbpl.device import resolve_device as _resolve

        return _resolve(device)
    except ImportError:
        pass
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast context for ``precision``.

    ``auto``: bf16 on CUDA devices that support it, float32 elsewhere (CPU bf16 autocast only
    pays off on CPUs with AMX/AVX512-BF16; ask for it with ``precision="bf16"``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {PRECISIONS}")
    if precision == "auto":
        use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        precision = "bf16" if use_bf16 else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


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
    out = torch.empty((x.shape[0], 3, size, size), dtype=torch.uint8)
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
    """The package's batch augmentation (``icbpl.augment.BatchAugment``) or a built-in stand-in.

    ``strong`` are the SimCLR/Barlow Twins augmentations (random resized crop 0.08-1, flip,
    colour jitter 0.4/0.4/0.2/0.1 with p=0.8, grayscale p=0.2, solarisation p=0.1); ``weak`` a crop
    of 0.5-1 plus flip and mild jitter (for ICBPL's consistency views).
    """
    try:
        from icbpl.augment import BatchAugment

        return BatchAugment(size)  # type: ignore[no-any-return,unused-ignore]
    except ImportError:
        return _StandInAugment(size, strength)


class _StandInAugment:
    """Batched SimCLR-style augmentation on any device (stand-in until ``icbpl.augment`` lands)."""

    def __init__(self, size: int, strength: str = "strong") -> None:
        self.size = int(size)
        strong = strength == "strong"
        self.scale = (0.08, 1.0) if strong else (0.5, 1.0)
        self.jitter = (0.4, 0.4, 0.2, 0.1) if strong else (0.2, 0.2, 0.1, 0.0)
        self.p_jitter = 0.8
        self.p_gray = 0.2 if strong else 0.0
        self.p_solar = 0.1 if strong else 0.0

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        b = images.shape[0]
        dev = images.device

        def rand(*shape: int) -> Tensor:
            return torch.rand(shape, generator=generator, device=dev)

        # random resized crop (area fraction in `scale`, log-uniform aspect 3/4 - 4/3) + h-flip
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * rand(b)
        log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * rand(b)
        ratio = torch.exp(log_r)
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (1 - w) * (2 * rand(b) - 1)
        cy = (1 - h) * (2 * rand(b) - 1)
        flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=dev)
        theta[:, 0, 0] = w * flip
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = h
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, [b, 3, self.size, self.size], align_corners=False)
        x = F.grid_sample(images.float(), grid, mode="bilinear", align_corners=False)
        # colour jitter (brightness, contrast, saturation; hue as a small channel rotation)
        bri, con, sat, hue = self.jitter
        apply = (rand(b) < self.p_jitter).float().view(b, 1, 1, 1)
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
        f_b = 1 + bri * (2 * rand(b) - 1)
        f_c = 1 + con * (2 * rand(b) - 1)
        f_s = 1 + sat * (2 * rand(b) - 1)
        y = x * f_b.view(b, 1, 1, 1)
        mean = y.mean(dim=(1, 2, 3), keepdim=True)
        y = (y - mean) * f_c.view(b, 1, 1, 1) + mean
        g2 = (0.299 * y[:, 0:1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3]).expand_as(y)
        y = (y - g2) * f_s.view(b, 1, 1, 1) + g2
        if hue:
            shift = hue * (2 * rand(b) - 1)
            y = torch.lerp(y, y.roll(1, dims=1), (shift.abs() * 2).clamp(max=1).view(b, 1, 1, 1))
        x = torch.lerp(x, y.clamp(0, 1), apply)
        to_gray = (rand(b) < self.p_gray).float().view(b, 1, 1, 1)
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
        x = torch.lerp(x, gray, to_gray)
        solar = (rand(b) < self.p_solar).view(b, 1, 1, 1)
        x = torch.where(solar & (x >= 0.5), 1 - x, x)
        return x.clamp(0, 1)


def batches(order: Tensor, batch_size: int, drop_last: bool) -> Iterator[Tensor]:
    """Consecutive ``batch_size`` slices of ``order`` (a short last one dropped if asked)."""
    n = order.shape[0]
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for s in range(0, stop, batch_size):
        yield order[s : s + batch_size]


def peak_memory(device: torch.device) -> int:
    """Peak allocated bytes on a CUDA device since the last reset (0 elsewhere)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return 0


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (for honest timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
