"""The Barlow Twins loss and model (Zbontar, Jing, Misra, LeCun, Deny, ICML 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from icbpl.encoders import Encoder

__all__ = ["BarlowTwins", "barlow_twins_loss", "make_projector"]


def barlow_twins_loss(
    z_a: Tensor, z_b: Tensor, lambd: float | None = 5e-3, eps: float = 1e-5
) -> Tensor:
    r"""Barlow Twins redundancy-reduction loss (Zbontar et al. 2021, eq. 1).

    Each embedding dimension is standardised over the batch (batch normalisation without affine
    parameters, biased variance, as ``nn.BatchNorm1d(affine=False)`` in the authors' code), then

    .. math::

        \mathcal{C}_{ij} = \frac{1}{N} \sum_b \hat z^A_{b,i} \hat z^B_{b,j}, \qquad
        \mathcal{L} = \sum_i (1 - \mathcal{C}_{ii})^2
            + \lambda \sum_i \sum_{j \ne i} \mathcal{C}_{ij}^2 .

    Args:
        z_a, z_b: projector outputs of the two views, ``(N, D)`` each (computed in float32).
        lambd: weight of the off-diagonal (redundancy) term; the paper's ``5e-3`` by default,
            ``None`` for ``1/D`` (the scaling that keeps both terms of equal size as ``D`` grows).
        eps: added to the variance before the square root.

    Returns:
        scalar loss.
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2:
        raise ValueError(
            f"z_a {tuple(z_a.shape)} and z_b {tuple(z_b.shape)} should be equal (N, D)"
        )
    n, d = z_a.shape
    if n < 2:
        raise ValueError(f"the cross-correlation needs a batch of at least 2, got {n}")
    a = z_a.float()
    b = z_b.float()
    a = (a - a.mean(0)) / (a.var(0, unbiased=False) + eps).sqrt()
    b = (b - b.mean(0)) / (b.var(0, unbiased=False) + eps).sqrt()
    c = a.T @ b / n
    diag = c.diagonal()
    on_diag = (1.0 - diag).pow(2).sum()
    off_diag = c.pow(2).sum() - diag.pow(2).sum()
    weight = 1.0 / d if lambd is None else float(lambd)
    return on_diag + weight * off_diag


def make_projector(in_dim: int, sizes: Sequence[int]) -> nn.Sequential:
    """Barlow Twins projector: ``[Linear(no bias) - BN - ReLU] * (len(sizes) - 1) - Linear``.

    ``sizes`` are the output widths, e.g. ``(2048, 2048, 2048)`` for a CIFAR ResNet-18 (the paper
    uses ``(8192, 8192, 8192)`` on ResNet-50).
    """
    if not sizes or min(sizes) < 1:
        raise ValueError(f"projector sizes={tuple(sizes)} should be a non-empty list of widths")
    layers: list[nn.Module] = []
    prev = int(in_dim)
    for width in sizes[:-1]:
        layers += [nn.Linear(prev, int(width), bias=False), nn.BatchNorm1d(int(width))]
        layers.append(nn.ReLU(inplace=True))
        prev = int(width)
    layers.append(nn.Linear(prev, int(sizes[-1]), bias=False))
    return nn.Sequential(*layers)


class BarlowTwins(nn.Module):
    """An encoder (anything with ``encode(images) -> (B, D)`` and ``config.feature_dim``) followed
    by the projector; ``forward`` maps images in ``[0, 1]`` to embeddings ``(B, sizes[-1])``."""

    def __init__(self, encoder: Encoder, sizes: Sequence[int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = make_projector(encoder.config.feature_dim, sizes)

    def forward(self, images: Tensor) -> Tensor:
        """Embeddings of ``images`` (B, 3, H, W) in [0, 1]."""
        return self.projector(self.encoder.encode(images))
