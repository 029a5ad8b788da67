"""Beyond the paper: SCAN's self-labelling step after ICBPL, on the same features.

ICBPL's clusters are first distilled into a linear classifier on the features (cross-entropy
on augmented views against ICBPL's labels), then SCAN's self-labelling step
(Van Gansbeke et al., ECCV 2020, section 2.3; :func:`icbpl.core.scan.scan_self_label_loss`) trains
that classifier on its own confident predictions: samples whose clean feature is classified with
probability above ``threshold`` teach the classifier to give an augmented view the same cluster,
with class-balanced weights. SCAN and SPICE use this step after their clustering stage.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from icbpl.core.multihead import MultiLinear, optimizer_step
from icbpl.core.scan import self_label_head
from icbpl.core.views import epoch_batches, view_sampler
from icbpl.util.device import seeded

__all__ = ["SelfLabelResult", "self_label"]


@dataclass
class SelfLabelResult:
    """The classifier after self-labelling and its clusters.

    Attributes:
        labels: (N,) int64 cluster of every sample (argmax of the classifier).
        probs: (N, k) float32 softmax of the classifier.
        weight: (D, k) float32 and ``bias`` (k,) float32: ``logits = X @ weight + bias``.
        info: epochs, threshold, samples above the threshold at the end.
    """

    labels: np.ndarray
    probs: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def _distil(
    head: MultiLinear,
    view: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
) -> None:
    """``epochs`` epochs of cross-entropy of the views against the clusters ``y`` (Adam)."""
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        for idx in epoch_batches(y.shape[0], batch_size, y.device, drop_last=False):
            optimizer_step(opt, F.cross_entropy(head(view(idx))[0], y[idx]))


def self_label(
    X: np.ndarray,
    labels: np.ndarray,
    n_clusters: int,
    *,
    views: np.ndarray | None = None,
    distil_epochs: int = 5,
    distil_steps: int = 1000,
    epochs: int = 20,
    distil_batch_size: int = 256,
    batch_size: int = 1000,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    threshold: float = 0.99,
    class_balance: bool = True,
    noise_std: float = 0.1,
    feature_dropout: float = 0.1,
    seed: int = 0,
    device: str | torch.device | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> SelfLabelResult:
    """Distil ``labels`` into a linear classifier on ``X``, then self-label it (SCAN's step).

    Args:
        X: features (N, D).
        labels: (N,) clusters to start from (e.g. ``ICBPL.labels_``), values in ``[0, k)``.
        n_clusters: k.
        views: features of augmented views (V, N, D): the strong views. Without them a view is
            the feature with Gaussian noise (``noise_std`` x per-dimension std) and dimension
            dropout (``feature_dropout``), as the SCAN peer does.
        distil_epochs, distil_steps: cross-entropy of the views against ``labels`` (batch
            ``distil_batch_size``) for ``distil_epochs`` epochs (at least 1), more if needed to
            make at least ``distil_steps`` steps (small data sets).
        epochs: self-labelling epochs (batch ``batch_size``; 0 keeps the distilled classifier).
        lr, weight_decay: Adam, for both stages (SCAN's self-labelling: 1e-4 with its backbone;
            1e-3 here, as the SCAN peer, for a linear head on fixed features).
        threshold, class_balance: SCAN's confidence threshold (0.99) and class balancing.
        seed: seeds every random choice; equal seeds give equal results on the CPU.
        device: where to compute (default CPU).
        on_epoch: called after each self-labelling epoch with (epoch, 1-based; mean loss).
    """
    x = torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)
    n, d = x.shape
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=x.device)
    if y.shape != (n,) or int(y.min()) < 0 or int(y.max()) >= n_clusters:
        raise ValueError(f"labels should be ({n},) cluster indices in [0, {n_clusters})")
    if distil_epochs < 1 or epochs < 0:
        raise ValueError(f"distil_epochs={distil_epochs} should be >= 1 and epochs={epochs} >= 0")
    v = None if views is None else torch.as_tensor(np.asarray(views, np.float32), device=x.device)
    view = view_sampler(x, v, noise_std=noise_std, dropout=feature_dropout)

    with seeded(int(seed), x.device):
        head = MultiLinear(1, d, n_clusters, device=x.device)
        bs = min(distil_batch_size, n)
        n_distil = max(distil_epochs, math.ceil(distil_steps / math.ceil(n / bs)))
        _distil(head, view, y, n_distil, bs, lr, weight_decay)
        self_label_head(
            head,
            x,
            view,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            threshold=threshold,
            class_balance=class_balance,
            on_epoch=on_epoch,
        )
        with torch.no_grad():
            probs = torch.cat([head(x[i : i + 8192])[0] for i in range(0, n, 8192)]).softmax(-1)
    info = {"distil_epochs": n_distil, "epochs": epochs, "threshold": threshold}
    return _result(head, probs, info)


def _result(head: MultiLinear, probs: torch.Tensor, info: dict[str, Any]) -> SelfLabelResult:
    assert head.bias is not None
    return SelfLabelResult(
        labels=probs.argmax(1).cpu().numpy().astype(np.int64),
        probs=probs.float().cpu().numpy(),
        weight=head.weight[0].detach().float().cpu().numpy(),
        bias=head.bias[0, 0].detach().float().cpu().numpy(),
        info={**info, "n_confident": int((probs.max(1).values > info["threshold"]).sum())},
    )
