"""The weighted ICBPL objective: the four losses of :mod:`icbpl.core.losses` combined.

Shared by head training on cached features (:mod:`icbpl.model.training`) and end-to-end fine-tuning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from icbpl.core.losses import augmentation_loss, min_distance_loss, mmd_loss, neighbour_loss

__all__ = ["LossWeights", "icbpl_objective"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the four losses (paper section 4.2: MMD about 8-9, augmentation 2, kNN 2)."""

    mmd: float = 8.0
    augmentation: float = 2.0
    neighbour: float = 2.0
    min_distance: float = 1.0

    def to_dict(self) -> dict[str, float]:
        """Plain dict, for JSON."""
        return asdict(self)


def icbpl_objective(
    z: Tensor,
    centroids: Tensor,
    *,
    z_views: Tensor | None = None,
    z_neighbours: Tensor | None = None,
    weights: LossWeights | None = None,
    distance: str = "cosine",
) -> dict[str, Tensor]:
    """Compute the four ICBPL losses and their weighted sum.

    Args:
        z: latent features of the originals on the unit sphere, (N, d).
        centroids: PEDCC points, (k, d).
        z_views: latents of augmented views, (V, N, d) or (N, d); enter the MMD with the originals
            (paper: "latent features of original and augmented samples") and the consistency loss.
        z_neighbours: latents of each sample's neighbours, (N, K, d) or (N, d).
        weights: loss weights; a zero weight skips that loss.
        distance: distance of the augmentation and neighbour losses
            (:func:`icbpl.core.losses.distance`).

    Returns:
        dict with ``mmd``, ``augmentation``, ``neighbour``, ``min_distance`` (unweighted, zero
        where unused) and ``total`` (the weighted sum, differentiable).
    """
    w = weights or LossWeights()
    zero = z.new_zeros(())
    out: dict[str, Tensor] = {}
    views = None
    if z_views is not None:
        views = z_views if z_views.dim() == 3 else z_views.unsqueeze(0)
    if w.mmd:
        pool = z if views is None else torch.cat([z, views.reshape(-1, z.shape[1])], dim=0)
        out["mmd"] = mmd_loss(pool, centroids)
    out["augmentation"] = (
        augmentation_loss(z, views, distance) if views is not None and w.augmentation else zero
    )
    out["neighbour"] = (
        neighbour_loss(z, z_neighbours, distance)
        if z_neighbours is not None and w.neighbour
        else zero
    )
    out["min_distance"] = min_distance_loss(z, centroids) if w.min_distance else zero
    out.setdefault("mmd", zero)
    out["total"] = (
        w.mmd * out["mmd"]
        + w.augmentation * out["augmentation"]
        + w.neighbour * out["neighbour"]
        + w.min_distance * out["min_distance"]
    )
    return out
