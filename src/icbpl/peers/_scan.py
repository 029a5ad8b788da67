"""SCAN on frozen features: the clustering step and the self-labelling step.

Van Gansbeke, Vandenhende, Georgoulis, Proesmans, Van Gool, "SCAN: Learning to Classify Images
without Labels", ECCV 2020 (arXiv 2005.12320). Section 2.2 (clustering step, eq. 2) and
section 2.3 (self-labelling). Defaults follow the authors' CIFAR configs (20 neighbours,
10 linear heads, Adam with weight decay 1e-4, entropy weight 5, batch 128; self-labelling with
threshold 0.99, class balancing, batch 1000) except two, because only a linear head on fixed
features is trained here while SCAN also trains the backbone for ~20k steps: fewer epochs
(CPU-friendly) and a 10x larger learning rate (1e-3 instead of 1e-4; pass ``lr=1e-4,
self_label_lr=1e-4`` for SCAN's value).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from icbpl.core.multihead import MultiLinear, select_head
from icbpl.core.scan import scan_loss, self_label_head
from icbpl.core.views import view_sampler
from icbpl.peers._registry import PeerResult, register_peer, resolve_neighbours, to_result

logger = logging.getLogger(__name__)


@register_peer("scan")
def fit_scan(
    X: Tensor,
    n_clusters: int,
    *,
    neighbours: Tensor | None,
    views: Tensor | None,
    seed: int,
    n_neighbours: int | None = None,
    n_heads: int = 10,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    entropy_weight: float = 5.0,
    self_label: bool = True,
    self_label_epochs: int = 50,
    self_label_batch_size: int = 1000,
    self_label_lr: float = 1e-3,
    threshold: float = 0.99,
    class_balance: bool = True,
    noise_std: float = 0.1,
    feature_dropout: float = 0.1,
) -> PeerResult:
    """SCAN's clustering step then its self-labelling step, on frozen features.

    Clustering step: ``n_heads`` linear heads ``softmax(W_h x + b_h)`` are trained together with
    Adam on :func:`scan_loss` (summed over heads); each step draws a batch of anchors and, for
    each, one neighbour at random among its ``n_neighbours`` mined ones (default 20, cosine, faiss)
    or given ``neighbours``. Anchors and neighbours enter as augmented views (SCAN augments both):
    a random precomputed view when ``views`` is given, else the feature with Gaussian noise
    (``noise_std`` x per-dimension std) and dimension dropout (``feature_dropout``). After
    training, the head with the lowest total loss over the whole data set (all neighbours) is
    kept, as in SCAN.

    Self-labelling (``self_label=True``): the kept head is fine-tuned on
    :func:`scan_self_label_loss` with the clean feature as the weak view and an augmented view
    (as above) as the strong one.

    ``info`` holds the per-head losses, the chosen head, and the number of confident samples at
    the end.
    """
    for name, value in [
        ("n_heads", n_heads),
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("self_label_batch_size", self_label_batch_size),
    ]:
        if value < 1:
            raise ValueError(f"{name}={value} should be >= 1")
    if self_label_epochs < 0:
        raise ValueError(f"self_label_epochs={self_label_epochs} should be >= 0")
    if not 0.0 <= feature_dropout < 1.0:
        raise ValueError(f"feature_dropout={feature_dropout} should be in [0, 1)")
    nbrs = resolve_neighbours(X, neighbours, n_neighbours, default=20)
    n, d = X.shape
    view = view_sampler(X, views, noise_std=noise_std, dropout=feature_dropout)

    heads = MultiLinear(n_heads, d, n_clusters, device=X.device)
    opt = torch.optim.Adam(heads.parameters(), lr=lr, weight_decay=weight_decay)
    bs = min(batch_size, n)
    steps = max(1, n // bs)  # SCAN drops the last incomplete batch
    for epoch in range(epochs):
        perm = torch.randperm(n, device=X.device)
        for s in range(steps):
            idx = perm[s * bs : (s + 1) * bs]
            pick = torch.randint(nbrs.shape[1], (idx.shape[0],), device=X.device)
            nb = nbrs[idx, pick]
            total, _, _ = scan_loss(
                heads(view(idx)).softmax(-1), heads(view(nb)).softmax(-1), entropy_weight
            )
            opt.zero_grad(set_to_none=True)
            total.sum().backward()
            opt.step()
        logger.debug("scan epoch %d: head losses %s", epoch, total.detach().tolist())

    with torch.no_grad():
        probs = heads(X).softmax(-1)  # (H, N, k)
        k = nbrs.shape[1]
        totals, cons, ents = scan_loss(
            probs.repeat_interleave(k, dim=1), probs[:, nbrs.reshape(-1)], entropy_weight
        )
    best = select_head(totals)
    head = heads.select(best)
    info: dict[str, object] = {
        "n_neighbours": k,
        "n_heads": n_heads,
        "epochs": epochs,
        "head_losses": totals.tolist(),
        "best_head": best,
        "consistency": float(cons[best]),
        "entropy": float(ents[best]),
    }

    if self_label and self_label_epochs > 0:
        self_label_head(
            head,
            X,
            view,
            epochs=self_label_epochs,
            batch_size=self_label_batch_size,
            lr=self_label_lr,
            weight_decay=weight_decay,
            threshold=threshold,
            class_balance=class_balance,
        )
        info["self_label_epochs"] = self_label_epochs

    with torch.no_grad():
        final = head(X)[0].softmax(-1)
    info["n_confident"] = int((final.max(dim=-1).values > threshold).sum())
    return to_result(final, info)
