"""Predefined evenly-distributed class centroids (PEDCC).

PEDCC (Zhu et al., ICBPL section 3.2; Hu et al., "PEDCC") places ``k`` unit vectors as evenly as
possible on the sphere :math:`S^{d-1}`. For ``k <= d + 1`` the optimum is a regular simplex, whose
pairwise cosine is exactly ``-1 / (k - 1)``; we build it in closed form and rotate it by a seeded
random orthogonal matrix. For ``k > d + 1`` we run the charge-repulsion iteration of the original
PEDCC code (points pushed apart by ``1 / r^2`` forces and projected back on the sphere), with a
decaying step so that it converges.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PEDCCInfo", "make_pedcc", "pedcc_info"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PEDCCInfo:
    """Geometry of a PEDCC point set."""

    n_points: int
    dim: int
    exact_simplex: bool
    max_cosine: float
    min_angle_degrees: float


def _random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random orthogonal ``(dim, dim)`` matrix (QR of a Gaussian, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def _simplex(k: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Regular simplex of ``k`` unit vectors in ``dim >= k - 1`` dimensions, randomly rotated.

    The centred standard basis ``e_i - 1/k`` of R^k spans a (k-1)-dim subspace and has pairwise
    cosine ``-1/(k-1)``; an orthonormal basis of that subspace gives coordinates in R^(k-1).
    """
    centred = np.eye(k) - 1.0 / k
    u, _, _ = np.linalg.svd(centred)
    coords = centred @ u[:, : k - 1]  # (k, k-1), same Gram matrix
    coords /= np.linalg.norm(coords, axis=1, keepdims=True)
    padded = np.zeros((k, dim))
    padded[:, : k - 1] = coords
    return padded @ _random_rotation(dim, rng).T


def _repulsion(k: int, dim: int, rng: np.random.Generator, n_iter: int) -> np.ndarray:
    """Charge repulsion on the sphere (original PEDCC iteration with a decaying step)."""
    x = rng.standard_normal((k, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    step0 = 0.1
    for it in range(n_iter):
        # sum_j (x_i - x_j) / r_ij^3 = x_i * sum_j w_ij - (W x)_i, w_ij = r_ij^-3 (unit rows:
        # r_ij^2 = 2 - 2 x_i.x_j), without the (k, k, d) difference tensor
        dist2 = np.maximum(2.0 - 2.0 * (x @ x.T), 1e-12)
        np.fill_diagonal(dist2, np.inf)
        w = dist2**-1.5
        force = x * w.sum(axis=1, keepdims=True) - w @ x  # sum of r_hat / r^2
        # keep only the tangential component, normalise so the step size is meaningful
        force -= (force * x).sum(axis=1, keepdims=True) * x
        scale = np.linalg.norm(force, axis=1, keepdims=True).max() + 1e-12
        step = step0 / (1.0 + it / 50.0)
        x = x + step * force / scale
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@functools.lru_cache(maxsize=64)
def _cached(k: int, dim: int, seed: int, n_iter: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = _simplex(k, dim, rng) if k <= dim + 1 else _repulsion(k, dim, rng, n_iter)
    pts = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    pts.setflags(write=False)
    return pts


def make_pedcc(n_points: int, dim: int, seed: int = 0, n_iter: int = 2000) -> np.ndarray:
    """Return ``n_points`` PEDCC unit vectors in ``dim`` dimensions, shape ``(n_points, dim)``.

    Deterministic for a seed and cached. For ``n_points <= dim + 1`` the points form an exact
    regular simplex (pairwise cosine ``-1/(n_points-1)``); otherwise they come from charge
    repulsion and :func:`pedcc_info` reports the minimum pairwise angle reached.

    Returns a fresh float64 array (the cache is never exposed to mutation).
    """
    if n_points < 2:
        raise ValueError(f"n_points={n_points} should be >= 2")
    if dim < 2:
        raise ValueError(f"dim={dim} should be >= 2 (the latent sphere needs at least a circle)")
    pts = _cached(int(n_points), int(dim), int(seed), int(n_iter)).copy()
    if n_points > dim + 1:
        info = pedcc_info(pts)
        logger.info(
            "PEDCC: %d points in %d dims is above the exact-simplex limit (%d); charge repulsion "
            "reached a minimum pairwise angle of %.2f degrees",
            n_points,
            dim,
            dim + 1,
            info.min_angle_degrees,
        )
    return pts


def pedcc_info(points: np.ndarray) -> PEDCCInfo:
    """Summarise a point set: maximum pairwise cosine and minimum pairwise angle."""
    k, dim = points.shape
    gram = points @ points.T
    np.fill_diagonal(gram, -np.inf)
    max_cos = float(gram.max())
    return PEDCCInfo(
        n_points=k,
        dim=dim,
        exact_simplex=k <= dim + 1,
        max_cosine=max_cos,
        min_angle_degrees=math.degrees(math.acos(max(-1.0, min(1.0, max_cos)))),
    )
