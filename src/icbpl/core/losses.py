"""The four ICBPL losses, as pure functions over tensors.

Notation: ``z`` are latent features on the unit sphere, shape ``(N, d)``; ``c`` are the PEDCC
points, shape ``(k, d)``. Every function follows its inputs' device and dtype.

Paper: Zhu, Hu, Wang, "Image Clustering Algorithm Based on Self-Supervised Pretrained Models and
Latent Feature Distribution Optimization" (arXiv 2408.01920), section 3.3, equations (2)-(6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DISTANCES",
    "Distance",
    "augmentation_loss",
    "distance",
    "min_distance_loss",
    "mmd_loss",
    "neighbour_loss",
]

Distance = Literal["cosine", "euclidean", "composite_cosine"]


def _cos(a: Tensor, b: Tensor) -> Tensor:
    return F.cosine_similarity(a, b, dim=-1, eps=1e-8)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return 1.0 - _cos(a, b)


def _euclidean(a: Tensor, b: Tensor) -> Tensor:
    # eps inside the sqrt keeps the gradient finite where a == b
    return ((a - b).pow(2).sum(-1) + 1e-12).sqrt()


def _composite_cosine(a: Tensor, b: Tensor) -> Tensor:
    # ICBPC (Hu et al.): shifted cosine 2.1 - 2 cos(a, b) plus an L1 term, weighted 3 : 8.
    return (2.1 - 2.0 * _cos(a, b)) + (8.0 / 3.0) * (a - b).abs().mean(-1)


DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cosine": _cosine,
    "euclidean": _euclidean,
    "composite_cosine": _composite_cosine,
}


def distance(a: Tensor, b: Tensor, kind: str = "cosine") -> Tensor:
    """Row-wise distance between ``a`` and ``b`` (broadcast over leading dims), shape ``(...,)``.

    ``cosine``: 1 - cos(a, b) (the paper's choice). ``euclidean``: ||a - b||_2 (paper Table 5).
    ``composite_cosine``: 2.1 - 2 cos + 8/3 mean|a - b| (the "composite cosine distance" of the
    authors' ICBPC code).
    """
    try:
        fn = DISTANCES[kind]
    except KeyError:
        raise ValueError(
            f"distance={kind!r} is not known; expected one of {sorted(DISTANCES)}"
        ) from None
    return fn(a, b)


def mmd_loss(z: Tensor, centroids: Tensor, kernel_mul: float = 2.0, kernel_num: int = 5) -> Tensor:
    """L1: multi-kernel Gaussian MMD between latent features and the PEDCC points (paper eq. 2-3).

    The target ``Y`` is the uniform distribution over the PEDCC points ``centroids`` (k, d), so a
    balanced partition is what the MMD favours. When k divides the batch count N this is the
    authors' code, which tiles the points in order to N rows; otherwise tiling and cutting at N
    would weigh the first ``N mod k`` points more (and, for N < k, ignore all points past the
    N-th, emptying those clusters), so each point then enters once with weight N / k (below).
    With ``X = z`` (N, d), ``Y`` the tiled points, and ``D`` the squared Euclidean distances over
    ``[X; Y]``,

        K = sum_{i=0}^{kernel_num-1} exp(-D / (b * kernel_mul^(i - kernel_num//2))),
        b = sum(D) / (4N^2 - 2N)     (mean off-diagonal squared distance, detached),
        MMD = mean(K_XX + K_YY - K_XY - K_YX).

    With the defaults the bandwidths are {1/4, 1/2, 1, 2, 4} x b. When ``kernel_mul`` is 2 only
    the widest kernel is exponentiated; each narrower one is the square of the next wider
    (``exp(-D / (b/2)) = exp(-D / b)^2``), so five kernels cost one ``exp`` and four products.
    The matrix is computed by blocks: ``K_XY`` once (``mean(K_YX) = mean(K_XY)``), and ``K_YY``,
    which has no gradient, without autograd; the value is the formula's (tests/test_losses.py).
    Returns a scalar.
    """
    n = z.shape[0]
    k = centroids.shape[0]
    points = centroids.to(dtype=z.dtype, device=z.device).detach()
    if n % k == 0:  # the authors' tiling: every point n / k times, each row weighing 1
        return _mmd_weighted(z, points.repeat(n // k, 1), 1.0, kernel_mul, kernel_num)
    return _mmd_weighted(z, points, n / k, kernel_mul, kernel_num)


def _mmd_weighted(
    z: Tensor, points: Tensor, r: float, kernel_mul: float, kernel_num: int
) -> Tensor:
    """`mmd_loss` against ``points`` (M, d), each standing for ``r`` rows (``M r = N``).

    The tiling made fractional: ``sum(D)`` over ``[X; Y]`` is
    ``sum D_XX + 2 r sum D_XP + r^2 sum D_PP`` and the kernel means are over ``X x P`` and
    ``P x P``; with the tiled points and ``r = 1`` this is the authors' formula term by term.
    """
    n = z.shape[0]
    zz = z.pow(2).sum(1)
    pp = points.pow(2).sum(1)
    d_xx = (zz[:, None] + zz[None, :] - 2.0 * z @ z.T).clamp_min(0.0)
    d_xp = (zz[:, None] + pp[None, :] - 2.0 * z @ points.T).clamp_min(0.0)
    with torch.no_grad():
        d_pp = (pp[:, None] + pp[None, :] - 2.0 * points @ points.T).clamp_min(0.0)
        m = 2 * n
        total = d_xx.sum() + 2.0 * r * d_xp.sum() + r * r * d_pp.sum()
        bandwidth = total / (m * m - m)
        bandwidth = bandwidth.clamp_min(1e-12) / (kernel_mul ** (kernel_num // 2))
        k_pp = _kernel_sum(d_pp, bandwidth, kernel_mul, kernel_num).mean()
    k_xx = _kernel_sum(d_xx, bandwidth, kernel_mul, kernel_num).mean()
    k_xp = _kernel_sum(d_xp, bandwidth, kernel_mul, kernel_num).mean()
    return k_xx + k_pp - 2.0 * k_xp


def _kernel_sum(dist2: Tensor, bandwidth: Tensor, kernel_mul: float, kernel_num: int) -> Tensor:
    """``sum_i exp(-dist2 / (bandwidth * kernel_mul**i))`` for ``i < kernel_num``."""
    if kernel_mul != 2.0:
        return torch.stack(
            [torch.exp(-dist2 / (bandwidth * kernel_mul**i)) for i in range(kernel_num)]
        ).sum(0)
    kernel = torch.exp(-dist2 / (bandwidth * 2.0 ** (kernel_num - 1)))
    total = kernel
    for _ in range(kernel_num - 1):
        kernel = kernel * kernel
        total = total + kernel
    return total


def augmentation_loss(z: Tensor, z_aug: Tensor, kind: str = "cosine") -> Tensor:
    """L2: augmentation consistency, mean distance between a sample and its view (paper eq. 4).

    ``z`` (N, d), ``z_aug`` (N, d) or (V, N, d) for V views; returns a scalar.
    """
    if z_aug.dim() == 3:
        return distance(z.unsqueeze(0), z_aug, kind).mean()
    return distance(z, z_aug, kind).mean()


def neighbour_loss(z: Tensor, z_neighbours: Tensor, kind: str = "cosine") -> Tensor:
    """L3: mean distance between a sample and its nearest neighbours (paper eq. 5).

    ``z`` (N, d); ``z_neighbours`` (N, d) for one neighbour each or (N, K, d) for K of them.
    Returns a scalar.
    """
    if z_neighbours.dim() == 3:
        return distance(z.unsqueeze(1), z_neighbours, kind).mean()
    return distance(z, z_neighbours, kind).mean()


def min_distance_loss(z: Tensor, centroids: Tensor) -> Tensor:
    """L4: mean over samples of 1 - max_j cos(z_i, c_j), the distance to the nearest PEDCC point.

    ``z`` (N, d), ``centroids`` (k, d); returns a scalar (paper eq. 6).
    """
    zn = F.normalize(z, dim=-1)
    cn = F.normalize(centroids.to(dtype=z.dtype, device=z.device), dim=-1)
    return (1.0 - (zn @ cn.T).max(dim=1).values).mean()
