"""The head's forward pass over one training step's rows (samples, views, neighbours)."""

from __future__ import annotations

import torch
from torch import Tensor

from icbpl.core.head import ProjectionHead

__all__ = ["step_latents"]


def step_latents(
    head: ProjectionHead,
    x: Tensor,
    views: Tensor | None,
    nb_t: Tensor | None,
    idx: Tensor,
    gen: torch.Generator,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One head forward over a step's rows: samples, a random view of each and a random
    neighbour of each.

    Returns ``(z, z_views, z_neighbours)`` (``None`` where not used).
    """
    b, dev = idx.numel(), idx.device
    parts = [x[idx]]
    if views is not None:
        pick = torch.randint(views.shape[0], (b,), generator=gen).to(dev)
        parts.append(views[pick, idx])
    if nb_t is not None:
        col = torch.randint(nb_t.shape[1], (b,), generator=gen).to(dev)
        parts.append(x[nb_t[idx, col]])
    out = list(head(torch.cat(parts) if len(parts) > 1 else parts[0]).split(b))
    z = out.pop(0)
    z_views = out.pop(0) if views is not None else None
    z_nb = out.pop(0) if nb_t is not None else None
    return z, z_views, z_nb
