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

    ``power`` (beyond the paper) first maps each input value to ``sign(x) * |x| ** power``: with
    0.5 (signed square root, the "power normalisation" of pooled CNN features, Perronnin et al.,
    ECCV 2010) a few large activations no longer dominate; 1.0 leaves the input as it is.
    """

    def __init__(
        self, in_dim: int, hidden: Sequence[int], latent_dim: int, power: float = 1.0
    ) -> None:
        super().__init__()
        if not power > 0:
            raise ValueError(f"power={power!r} should be > 0 (1.0: inputs unchanged)")
        self.power = float(power)
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
        x = self.power_transform(x)
        std = x.std(0)
        self.set_standardisation(x.mean(0), std.clamp_min(0.1 * float(std.mean()) + 1e-12))

    def power_transform(self, x: Tensor) -> Tensor:
        """``sign(x) * |x| ** power`` (``x`` itself when ``power`` is 1)."""
        if self.power == 1.0:
            return x
        return torch.sign(x) * x.abs().pow(self.power)

    def set_standardisation(self, mean: Tensor, scale: Tensor) -> None:
        """Set the input standardisation ``(x - mean) / scale`` (copies, no aliasing)."""
        self.mean.copy_(mean)
        self.scale.copy_(scale.clamp_min(1e-12))

    def forward(self, x: Tensor) -> Tensor:
        """Map features (B, in_dim) to unit-norm latents (B, latent_dim)."""
        h = (self.power_transform(x) - self.mean) / self.scale
        return F.normalize(self.net(h), dim=-1)
