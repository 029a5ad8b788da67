"""Batch augmentations on image tensors, with per-sample random parameters.

`BatchAugment` applies the SimCLR-style views used by ICBPL's augmentation loss (arXiv
2408.01920, section 3; the CIFAR settings of SimCLR/SCAN): random resized crop, horizontal flip,
colour jitter (p=0.8), random grayscale (p=0.2) and Gaussian blur (p=0.5, kernel about 10% of
the side). Every sample gets its own parameters, drawn from an explicit `torch.Generator`, and
the whole batch is processed at once on the images' device: the crop+resize is one
`torchvision.ops.roi_align` call (box-averaged, so large crops are antialiased), jitter and
grayscale are blends with per-sample factors, and the blur is one grouped convolution.

`resize_batch` is the preprocessing resize (central square crop, antialiased bilinear).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

__all__ = ["RESIZE_METHOD", "BatchAugment", "resize_batch"]

#: Identity of `resize_batch`'s resampling, recorded in feature-cache keys.
RESIZE_METHOD = "center-square-crop,bilinear-antialias,uint8-on-cpu"

_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


def _check_batch(images: Tensor, name: str = "images") -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} should be a (B, 3, H, W) tensor, got {shape}")


def _to_float(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"images should be uint8 or float in [0, 1], got dtype={images.dtype}")
    return images


def resize_batch(images: Tensor, size: int, *, center_crop: bool = True) -> Tensor:
    """Resize a batch to ``(B, 3, size, size)`` float32 in [0, 1] (`RESIZE_METHOD`).

    uint8 batches on the CPU are resized in 8 bits (fast SIMD kernel, results rounded to whole
    grey levels); float batches, and batches on other devices, in float32.

    Args:
        images: ``(B, 3, H, W)`` uint8 (0..255) or float (0..1), on any device.
        size: output side in pixels.
        center_crop: crop the central ``min(H, W)`` square first (keeps the aspect ratio, like
            "resize the shorter side, then centre-crop"); ``False`` squashes to a square.
    """
    _check_batch(images)
    if size < 1:
        raise ValueError(f"size={size} should be a positive number of pixels")
    x = images
    h, w = x.shape[-2:]
    if center_crop and h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[..., top : top + side, left : left + side]
    if x.shape[-2:] == (size, size):
        return _to_float(x).float().contiguous()
    if x.dtype == torch.uint8 and x.device.type == "cpu":
        # PyTorch's uint8 channels_last kernel (SIMD, like Pillow) is about 20x faster than the
        # float one on CPU; its output is rounded to 8 bits, as a resized 8-bit image would be.
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        return x.float().div_(255.0).contiguous()
    x = _to_float(x).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(0.0, 1.0)


def _gray(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hue in [0, 1), saturation, value of ``(B, 3, H, W)`` RGB (torchvision's formulas).

    The hue's sector is the channel holding the maximum (ties: red, then green, then blue, as
    ``max`` returns the first), so no per-sector masks are built.
    """
    maxc, which = x.max(1)
    minc = x.amin(1)
    chroma = maxc - minc
    grey = chroma == 0
    one = torch.ones_like(maxc)
    s = chroma / torch.where(grey, one, maxc)
    div = torch.where(grey, one, chroma)
    r, g, b = x.unbind(1)
    # sector offset 0 / 2 / 4 plus (next - previous channel) / chroma
    h = torch.where(which == 0, g - b, torch.where(which == 1, b - r, r - g)).div_(div)
    h.add_(which.to(h.dtype) * 2.0)
    return torch.remainder(h.div_(6.0), 1.0), s, maxc


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """Inverse of :func:`_rgb_to_hsv`: channel ``n`` (5, 3, 1 for R, G, B) is
    ``v - v * s * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``."""
    n = torch.tensor([5.0, 3.0, 1.0], dtype=h.dtype, device=h.device).view(1, 3, 1, 1)
    k = torch.remainder(n + h.unsqueeze(1) * 6.0, 6.0)
    w = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    vs = (v * s).unsqueeze(1)
    return (v.unsqueeze(1) - vs * w).clamp_(0.0, 1.0)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``factor * x + (1 - factor) * other`` clamped to [0, 1]; ``factor`` is ``(B,)``."""
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)


def _gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur each image of ``x`` with its own sigma ``(B,)``: separable, reflect-padded."""
    b, c, h, w = x.shape
    t = torch.arange(kernel_size, device=x.device, dtype=x.dtype) - kernel_size // 2
    k = torch.exp(-(t**2) / (2.0 * sigma.to(x.dtype).view(-1, 1) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, K)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, kernel_size, 1), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, 1, kernel_size), groups=b * c)
    return y.view(b, c, h, w)


@dataclass(frozen=True)
class BatchAugment:
    """Random views of a batch: ``BatchAugment(size)(images, generator) -> (B, 3, size, size)``.

    Args:
        size: output side in pixels (the encoder's input size).
        scale: range of the crop's area as a fraction of the image (SimCLR: 0.08-1; 0.2-1 is the
            usual choice for small images such as CIFAR).
        ratio: range of the crop's aspect ratio (sampled log-uniformly).
        flip_p: probability of a horizontal flip.
        jitter: maximum strength of brightness, contrast, saturation and hue jitter (the factors
            are uniform in ``[1 - s, 1 + s]``, the hue shift in ``[-s, s]``), applied in a random
            order per call.
        jitter_p: probability of colour jitter.
        grayscale_p: probability of converting to grayscale.
        blur_p: probability of Gaussian blur.
        blur_sigma: range of the blur's sigma in pixels.
        blur_kernel: the blur's kernel side as a fraction of ``size`` (rounded to an odd >= 3).
    """

    size: int
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: float = 0.1

    def __post_init__(self) -> None:
        if int(self.size) < 1:
            raise ValueError(f"size={self.size} should be a positive number of pixels")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"scale={self.scale} should satisfy 0 < low <= high <= 1")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio={self.ratio} should satisfy 0 < low <= high")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} should be a probability in [0, 1]")
        if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5:
            raise ValueError(f"jitter={self.jitter} should be 4 strengths >= 0, hue <= 0.5")
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma={self.blur_sigma} should satisfy 0 < low <= high")

    @property
    def kernel_size(self) -> int:
        """Side of the blur kernel: ``blur_kernel * size`` rounded to an odd integer >= 3."""
        return max(3, round(self.blur_kernel * self.size) // 2 * 2 + 1)

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict (for JSON and cache keys)."""
        return {"type": type(self).__name__, **asdict(self)}

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment ``images`` ``(B, 3, H, W)`` (float in [0, 1] or uint8) on their device.

        Parameters are drawn from ``generator`` (on its own device, then moved), so the same
        generator state gives the same views on any device. Returns float32 in [0, 1].
        """
        _check_batch(images)
        x = _to_float(images).float()
        n = x.shape[0]
        if n == 0:
            return x.new_zeros((0, 3, self.size, self.size))
        p = self._sample(n, x.shape[-2], x.shape[-1], generator, x.device)
        x = self._crop_flip(x, p["boxes"], p["flip"])
        for op in p["order"].tolist():
            x = self._jitter_op(int(op), x, p["factors"][:, op])
        x = torch.where(p["gray"].view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
        blur = p["blur"].nonzero().flatten()
        if blur.numel():
            x[blur] = _gaussian_blur(x[blur], p["sigma"][blur], self.kernel_size).clamp_(0, 1)
        return x

    def _sample(
        self, n: int, h: int, w: int, gen: torch.Generator | None, device: torch.device
    ) -> dict[str, Tensor]:
        gdev = gen.device if gen is not None else torch.device("cpu")

        def uniform(shape: tuple[int, ...], low: float, high: float) -> Tensor:
            return torch.rand(shape, generator=gen, device=gdev) * (high - low) + low

        tries = 10  # torchvision's RandomResizedCrop: 10 tries, then a central crop
        area = uniform((n, tries), *self.scale) * (h * w)
        ratio = torch.exp(uniform((n, tries), math.log(self.ratio[0]), math.log(self.ratio[1])))
        cw, ch = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
        ok = (cw <= w) & (ch <= h)
        first = torch.where(ok.any(1), ok.float().argmax(1), 0).unsqueeze(1)
        cw, ch = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0]
        fallback = ~ok.any(1)
        whole_ratio = min(max(w / h, self.ratio[0]), self.ratio[1])
        fw, fh = min(float(w), h * whole_ratio), min(float(h), w / whole_ratio)
        cw, ch = torch.where(fallback, fw, cw), torch.where(fallback, fh, ch)
        x0 = torch.rand(n, generator=gen, device=gdev) * (w - cw)
        y0 = torch.rand(n, generator=gen, device=gdev) * (h - ch)
        x0 = torch.where(fallback, (w - cw) / 2, x0)
        y0 = torch.where(fallback, (h - ch) / 2, y0)
        index = torch.arange(n, device=gdev, dtype=x0.dtype)
        boxes = torch.stack((index, x0, y0, x0 + cw, y0 + ch), dim=1)

        b, c, s, hue = self.jitter
        lows = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -hue], device=gdev)
        highs = torch.tensor([1 + b, 1 + c, 1 + s, hue], device=gdev)
        factors = torch.rand((n, 4), generator=gen, device=gdev) * (highs - lows) + lows
        jittered = torch.rand(n, generator=gen, device=gdev) < self.jitter_p
        identity = torch.tensor([1.0, 1.0, 1.0, 0.0], device=gdev)
        factors = torch.where(jittered.unsqueeze(1), factors, identity)
        out = {
            "boxes": boxes,
            "flip": torch.rand(n, generator=gen, device=gdev) < self.flip_p,
            "factors": factors,
            "order": torch.randperm(4, generator=gen, device=gdev),
            "gray": torch.rand(n, generator=gen, device=gdev) < self.grayscale_p,
            "blur": torch.rand(n, generator=gen, device=gdev) < self.blur_p,
            "sigma": uniform((n,), *self.blur_sigma),
        }
        return {k: v.to(device) for k, v in out.items()}

    def _crop_flip(self, x: Tensor, boxes: Tensor, flip: Tensor) -> Tensor:
        out = roi_align(
            x, boxes.to(x.dtype), output_size=self.size, spatial_scale=1.0, aligned=True
        )  # sampling_ratio=-1: ceil(box / size) samples per bin, averaged (antialiasing)
        return torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)

    @staticmethod
    def _jitter_op(op: int, x: Tensor, factor: Tensor) -> Tensor:
        if op == 0:  # brightness
            return (x * factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
        if op == 1:  # contrast: blend with the mean grey level
            return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), factor)
        if op == 2:  # saturation: blend with the grey image
            return _blend(x, _gray(x), factor)
        # hue: rotate in HSV, only the images whose shift is not zero (the others keep x)
        moved = (factor != 0).nonzero().flatten()
        if moved.numel() == 0:
            return x
        h, s, v = _rgb_to_hsv(x[moved])
        h = torch.remainder(h + factor[moved].view(-1, 1, 1), 1.0)
        out = x.clone()
        out[moved] = _hsv_to_rgb(h, s, v)
        return out
