"""scikit-learn's bundled 8x8 digits and their affine views (for ``icbpl demo``).

The digits (1797 images, 10 classes, no download) are small enough to cluster from raw pixels
in seconds. ICBPL's augmentation loss needs views of each sample; for 8x8 digits the views are
small random affine transforms of the image (rotation, isotropic scale and shift about the
centre, bilinear resampling), drawn per image from a seeded generator:

>>> from icbpl.data.digits import load_digits_data, digits_views
>>> images, labels = load_digits_data()             # (1797, 8, 8) float32 in [0, 1], (1797,)
>>> views = digits_views(images, n_views=4, seed=0)  # (4, 1797, 8, 8)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["digits_views", "load_digits_data"]


def load_digits_data() -> tuple[np.ndarray, np.ndarray]:
    """The digits as ``(N, 8, 8)`` float32 images in [0, 1] and ``(N,)`` int64 labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (np.asarray(data.images, dtype=np.float32) / 16.0).clip(0.0, 1.0)
    return images, np.asarray(data.target, dtype=np.int64)


def _affine(
    image: np.ndarray, angle: float, scale: float, shift: tuple[float, float]
) -> np.ndarray:
    """``image`` rotated by ``angle`` (radians), scaled by ``scale`` about its centre, shifted."""
    from scipy.ndimage import affine_transform

    centre = (np.asarray(image.shape, dtype=np.float64) - 1.0) / 2.0
    cos, sin = math.cos(angle), math.sin(angle)
    # affine_transform maps output coordinates o to input coordinates M @ o + offset: the inverse
    # of "scale and rotate about the centre, then shift".
    inverse = np.array([[cos, sin], [-sin, cos]]) / scale
    offset = centre - inverse @ (centre + np.asarray(shift))
    return affine_transform(image, inverse, offset=offset, order=1, mode="constant", cval=0.0)


def digits_views(
    images: np.ndarray,
    n_views: int = 4,
    *,
    max_rotation: float = 12.0,
    scale: tuple[float, float] = (0.9, 1.1),
    max_shift: float = 0.7,
    seed: int = 0,
) -> np.ndarray:
    """Random affine views of small grey images, ``(n_views, N, H, W)`` float32.

    Each view of each image gets its own rotation uniform in ``±max_rotation`` degrees, scale
    uniform in ``scale`` and shift uniform in ``±max_shift`` pixels per axis, applied about the
    image centre with bilinear interpolation (``scipy.ndimage.affine_transform``, order 1, zeros
    outside). The same ``seed`` gives the same views.

    Args:
        images: ``(N, H, W)`` grey images (e.g. from :func:`load_digits_data`).
        n_views: number of views V per image (>= 1).
        max_rotation: largest rotation in degrees.
        scale: range of the isotropic scale factor.
        max_shift: largest shift in pixels along each axis.
        seed: seed of the transform parameters.
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"images should have shape (N, H, W), got {x.shape}")
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ValueError(f"n_views={n_views!r} should be an integer >= 1")
    if not 0.0 < scale[0] <= scale[1]:
        raise ValueError(f"scale={scale} should satisfy 0 < low <= high")
    if max_rotation < 0 or max_shift < 0:
        raise ValueError(f"max_rotation={max_rotation} and max_shift={max_shift} should be >= 0")
    rng = np.random.default_rng(seed)
    n = len(x)
    angles = np.deg2rad(rng.uniform(-max_rotation, max_rotation, size=(n_views, n)))
    scales = rng.uniform(scale[0], scale[1], size=(n_views, n))
    shifts = rng.uniform(-max_shift, max_shift, size=(n_views, n, 2))
    out = np.empty((n_views, *x.shape), dtype=np.float32)
    for v in range(n_views):
        for i in range(n):
            shift = (float(shifts[v, i, 0]), float(shifts[v, i, 1]))
            out[v, i] = _affine(x[i], float(angles[v, i]), float(scales[v, i]), shift)
    return out
