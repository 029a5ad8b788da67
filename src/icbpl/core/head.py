"""The clustering head: an MLP, described by its layer sizes, onto the unit sphere."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    """MLP ``in_dim -> hidden[0] -> ... -> latent_dim`` followed by L2 normalisation.

    Hidden layers are Linear + BatchNorm1d + ReLU (the paper's FC head). ``hidden=()`` gives a
    single linear map. The input is standardised by fixed buffers ``mean``/``scale`` (set from the
    training features), so the head is self-contained when saved.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        self.in_dim = int(in_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.latent_dim = int(latent_dim)
        layers: list[nn.Module] = []
        prev = self.in_dim
        for width in self.hidden:
            layers += [nn.Linear(prev, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            prev = width
        layers.append(nn.Linear(prev, self.latent_dim))
        self.net = nn.Sequential(*layers)
        self.mean: Tensor
        self.scale: Tensor
        self.register_buffer("mean", torch.zeros(self.in_dim))
        self.register_buffer("scale", torch.ones(self.in_dim))

    def fit_standardisation(self, x: Tensor) -> None:
        """Standardise by the per-feature mean of ``x`` and a std floored at 10% of its mean.

        The floor keeps near-constant input dimensions (blank border pixels, dead channels) from
        being blown up when augmented views or new samples vary there.
        """
        std = x.std(0)
        self.set_standardisation(x.mean(0), std.clamp_min(0.1 * float(std.mean()) + 1e-12))

    def set_standardisation(self, mean: Tensor, scale: Tensor) -> None:
        """Set the input standardisation ``(x - mean) / scale`` (copies, no aliasing)."""
        self.mean.copy_(mean)
        self.scale.copy_(scale.clamp_min(1e-12))

    def forward(self, x: Tensor) -> Tensor:
        """Map features (B, in_dim) to unit-norm latents (B, latent_dim)."""
        h = (x - self.mean) / self.scale
        return F.normalize(self.net(h), dim=-1)
