"""Sampling for heads trained on frozen features: mini-batches, partners, feature-space views."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def epoch_batches(
    n: int, batch_size: int, device: torch.device, *, drop_last: bool
) -> list[Tensor]:
    """One epoch's batches: a fresh ``torch.randperm(n)`` cut into pieces of ``min(batch_size, n)``
    (the last, shorter one dropped with ``drop_last``, as SCAN's and TEMI's loaders do)."""
    perm = torch.randperm(n, device=device)
    bs = min(batch_size, n)
    return list((perm[: n - n % bs] if drop_last else perm).split(bs))


def random_partners(pool: Tensor, idx: Tensor) -> Tensor:
    """For each sample ``i`` of ``idx``, one entry of its row ``pool[i]`` drawn uniformly."""
    return pool[idx, torch.randint(pool.shape[1], (idx.shape[0],), device=pool.device)]


def augmented(
    x: Tensor,
    idx: Tensor,
    views: Tensor | None,
    *,
    noise_std: float,
    dropout: float,
    feature_std: Tensor | None = None,
) -> Tensor:
    """Features of an augmented view of samples ``idx``, shape ``(len(idx), D)``.

    With precomputed ``views`` (V, N, D) each sample gets one of its V views at random. Without
    them the view is synthesised from the feature itself: Gaussian noise with standard deviation
    ``noise_std`` times each feature dimension's standard deviation over the data
    (``feature_std``), then dropout of individual dimensions with probability ``dropout``
    (survivors rescaled by ``1 / (1 - dropout)``).
    """
    if views is not None:
        pick = torch.randint(views.shape[0], (idx.shape[0],), device=x.device)
        return views[pick, idx]
    out = x[idx]
    if noise_std > 0:
        scale = feature_std if feature_std is not None else x.std(dim=0)
        out = out + noise_std * scale * torch.randn_like(out)
    if dropout > 0:
        out = torch.nn.functional.dropout(out, p=dropout, training=True)
    return out


def view_sampler(
    x: Tensor, views: Tensor | None, *, noise_std: float, dropout: float
) -> Callable[[Tensor], Tensor]:
    """``idx -> augmented(x, idx, views, ...)`` with the per-dimension std computed once."""
    feature_std = x.std(dim=0) if x.shape[0] > 1 else torch.zeros_like(x[0])

    def view(idx: Tensor) -> Tensor:
        return augmented(
            x, idx, views, noise_std=noise_std, dropout=dropout, feature_std=feature_std
        )

    return view
