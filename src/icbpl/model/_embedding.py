"""Whole-array passes of the head during training: labels/latents, and its standardisation."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from icbpl.core.head import ProjectionHead

__all__ = ["embed_labels", "fit_standardisation_blocked"]


def embed_labels(
    head: ProjectionHead, x: Tensor, centroids: Tensor, keep: bool, batch: int = 4096
) -> tuple[np.ndarray, Tensor | None]:
    """Every sample's nearest PEDCC point, and (with ``keep``) the latents (N, d)."""
    was_training = head.training
    head.eval()
    labels, latents = [], []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            z = head(x[i : i + batch])
            labels.append((z @ centroids.T).argmax(1).cpu())
            if keep:
                latents.append(z)
    head.train(was_training)
    return torch.cat(labels).numpy(), torch.cat(latents) if keep else None


def fit_standardisation_blocked(head: ProjectionHead, x: Tensor, block: int = 65536) -> None:
    """:meth:`ProjectionHead.fit_standardisation`, by blocks of rows for large ``x`` (float64
    sums), so a memory-mapped array is never transformed whole."""
    if x.shape[0] <= block:
        head.fit_standardisation(x)
        return
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(total)
    for i in range(0, x.shape[0], block):
        part = x[i : i + block].double()
        total += part.sum(0)
        squares += (part * part).sum(0)
    n = x.shape[0]
    mean = total / n
    std = ((squares - n * mean * mean).clamp_min(0.0) / (n - 1)).sqrt()
    scale = std.clamp_min(0.1 * float(std.mean()) + 1e-12)
    head.set_standardisation(mean.to(x.dtype), scale.to(x.dtype))
