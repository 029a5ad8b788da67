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
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from icbpl.core.multihead import MultiLinear, select_head
from icbpl.core.views import view_sampler
from icbpl.peers._registry import PeerResult, register_peer, resolve_neighbours, to_result

__all__ = ["scan_loss", "scan_self_label_loss", "self_label_head"]

logger = logging.getLogger(__name__)

_EPS = 1e-8  # SCAN's clamp inside log for the entropy and consistency terms


def scan_loss(
    anchor_probs: Tensor, neighbour_probs: Tensor, entropy_weight: float = 5.0
) -> tuple[Tensor, Tensor, Tensor]:
    """SCAN clustering loss, paper eq. (2), for one or several heads.

    ``Λ = -1/|B| Σ_{x∈B} log <Φ(x), Φ(k_x)>  -  λ H(Φ̄),   Φ̄ = 1/|B| Σ_{x∈B} Φ(x),
    H(q) = -Σ_c q_c log q_c``

    where ``Φ(x)`` is the softmax over clusters, ``k_x`` a neighbour of ``x`` (drawn from its mined
    neighbours) and ``λ`` the entropy weight. The consistency term is SCAN's binary cross-entropy
    of the dot product against 1; both logs clamp their argument at 1e-8 as SCAN does.

    Args:
        anchor_probs: ``Φ(x)``, shape ``(..., B, k)`` (leading dims: heads).
        neighbour_probs: ``Φ(k_x)``, same shape.
        entropy_weight: ``λ`` (5.0 in SCAN).

    Returns:
        ``(total, consistency, entropy)``, each of shape ``(...,)``; ``total = consistency -
        λ * entropy``.
    """
    sim = (anchor_probs * neighbour_probs).sum(dim=-1)
    consistency = -sim.clamp_min(_EPS).log().mean(dim=-1)
    mean_p = anchor_probs.mean(dim=-2).clamp_min(_EPS)
    entropy = -(mean_p * mean_p.log()).sum(dim=-1)
    return consistency - entropy_weight * entropy, consistency, entropy


def scan_self_label_loss(
    weak_logits: Tensor,
    strong_logits: Tensor,
    threshold: float = 0.99,
    class_balance: bool = True,
) -> Tensor:
    """SCAN self-labelling loss (paper section 2.3), a scalar.

    ``ŷ_i = argmax_c softmax(weak_logits_i)``; the confident set is ``C = {i : max_c
    softmax(weak_logits_i) > threshold}``;

    ``L = Σ_{i∈C} w_{ŷ_i} CE(strong_logits_i, ŷ_i) / Σ_{i∈C} w_{ŷ_i}``

    with class-balancing weights ``w_c = |C| / |{i∈C : ŷ_i = c}|`` (all ones when
    ``class_balance`` is False), as in the authors' ``ConfidenceBasedCE``. The targets carry no
    gradient. Returns a zero that keeps the graph when no sample is confident.

    Args:
        weak_logits: logits of the (weakly augmented) samples, ``(B, k)``.
        strong_logits: logits of their strongly augmented views, ``(B, k)``.
        threshold: confidence threshold on the max probability (0.99 in SCAN).
        class_balance: weight classes inversely to their frequency among confident samples.
    """
    probs = weak_logits.detach().softmax(dim=-1)
    conf, target = probs.max(dim=-1)
    mask = conf > threshold
    if not bool(mask.any()):
        return strong_logits.sum() * 0.0
    t = target[mask]
    weight = None
    if class_balance:
        counts = torch.bincount(t, minlength=weak_logits.shape[-1]).to(strong_logits.dtype)
        weight = torch.where(counts > 0, t.numel() / counts.clamp_min(1.0), counts.new_ones(()))
    return F.cross_entropy(strong_logits[mask], t, weight=weight)


def self_label_head(
    head: MultiLinear,
    X: Tensor,
    view: Callable[[Tensor], Tensor],
    *,
    epochs: int,
    batch_size: int = 1000,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    threshold: float = 0.99,
    class_balance: bool = True,
    on_epoch: Callable[[int, float], None] | None = None,
) -> None:
    """SCAN's self-labelling step (section 2.3) on a one-head ``head``, in place.

    Each step takes a batch of ``batch_size`` samples, labels the confident ones by the head's own
    prediction on the clean features ``X[idx]`` (the weak view) and trains the head with
    :func:`scan_self_label_loss` on ``view(idx)`` (the strong view), with Adam. Uses torch's
    global RNG (seed it around the call). ``on_epoch(epoch, mean loss)`` is called after each
    epoch (1-based), e.g. for a progress bar.
    """
    n = X.shape[0]
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    bs = min(batch_size, n)
    steps = math.ceil(n / bs)
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n, device=X.device)
        total = X.new_zeros(())
        for s in range(steps):
            idx = perm[s * bs : (s + 1) * bs]
            with torch.no_grad():
                weak = head(X[idx])[0]
            loss = scan_self_label_loss(weak, head(view(idx))[0], threshold, class_balance)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if on_epoch is not None:
                total += loss.detach()
        if on_epoch is not None:
            on_epoch(epoch, float(total) / steps)


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
