"""SCAN's losses and self-labelling step on a linear multi-head (Van Gansbeke et al., ECCV 2020).

The clustering loss (paper eq. 2) and the self-labelling step (section 2.3) serve the SCAN peer
(:mod:`icbpl.peers`), whose clustering step is also ICBPL's ``init="scan"`` start.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from icbpl.core.multihead import MultiLinear, optimizer_step
from icbpl.core.views import epoch_batches

__all__ = ["scan_eval_loss", "scan_loss", "scan_self_label_loss", "self_label_head"]

_EPS = 1e-8  # SCAN's clamp of the cluster marginal inside the entropy's log
_LOG_MIN = -100.0  # torch's BCELoss clamps its log at -100 (SCAN's consistency term is a BCE)


def _log_similarity(sim: Tensor) -> Tensor:
    """``log(sim)`` clamped at -100, as ``nn.BCELoss`` does, with finite gradients at 0."""
    positive = sim > 0
    safe = torch.where(positive, sim, torch.ones_like(sim))
    return torch.where(positive, safe.log(), torch.full_like(sim, _LOG_MIN)).clamp_min(_LOG_MIN)


def _entropy_of_mean(probs: Tensor) -> Tensor:
    mean_p = probs.mean(dim=-2).clamp_min(_EPS)
    return -(mean_p * mean_p.log()).sum(dim=-1)


def scan_loss(
    anchor_probs: Tensor, neighbour_probs: Tensor, entropy_weight: float = 5.0
) -> tuple[Tensor, Tensor, Tensor]:
    """SCAN clustering loss, paper eq. (2), for one or several heads.

    ``Λ = -1/|B| Σ_{x∈B} log <Φ(x), Φ(k_x)>  -  λ H(Φ̄),   Φ̄ = 1/|B| Σ_{x∈B} Φ(x),
    H(q) = -Σ_c q_c log q_c``

    where ``Φ(x)`` is the softmax over clusters, ``k_x`` a neighbour of ``x`` (drawn from its mined
    neighbours) and ``λ`` the entropy weight. As in the authors' ``SCANLoss``, the consistency
    term is ``nn.BCELoss`` of the dot product against 1 (its log clamped at -100) and the
    entropy's log clamps the marginal at 1e-8.

    Args:
        anchor_probs: ``Φ(x)``, shape ``(..., B, k)`` (leading dims: heads).
        neighbour_probs: ``Φ(k_x)``, same shape.
        entropy_weight: ``λ`` (5.0 in SCAN).

    Returns:
        ``(total, consistency, entropy)``, each of shape ``(...,)``; ``total = consistency -
        λ * entropy``.
    """
    sim = (anchor_probs * neighbour_probs).sum(dim=-1)
    consistency = -_log_similarity(sim).mean(dim=-1)
    entropy = _entropy_of_mean(anchor_probs)
    return consistency - entropy_weight * entropy, consistency, entropy


@torch.no_grad()
def scan_eval_loss(
    probs: Tensor, pool: Tensor, entropy_weight: float = 1.0
) -> tuple[Tensor, Tensor, Tensor]:
    """SCAN's loss over every (sample, pool member) pair at once, per head (``scan_evaluate``).

    ``consistency = -1/(N P) Σ_i Σ_j log <Φ(x_i), Φ(x_{pool[i, j]})>``, ``entropy = H(Φ̄)`` over
    all ``N`` samples, ``total = consistency - entropy_weight * entropy``. The authors select
    the epoch and head with the lowest ``total`` at ``entropy_weight = 1`` with ``pool`` = each
    sample itself and its first 5 neighbours.

    Args:
        probs: ``Φ(x)`` of all samples, ``(H, N, k)`` (or ``(N, k)``).
        pool: ``(N, P)`` indices into the samples.
        entropy_weight: the entropy's weight (1 in the authors' evaluation).

    Returns:
        ``(total, consistency, entropy)``, each ``(H,)`` (scalars for 2-D ``probs``).
    """
    single = probs.ndim == 2
    p = probs.unsqueeze(0) if single else probs
    consistency = p.new_zeros(p.shape[0])
    for j in range(pool.shape[1]):  # P columns; each gathers (H, N, k), not (H, N, P, k)
        sim = (p * p[:, pool[:, j]]).sum(dim=-1)
        consistency -= _log_similarity(sim).sum(dim=-1)
    consistency /= pool.numel()
    entropy = _entropy_of_mean(p)
    total = consistency - entropy_weight * entropy
    if single:
        return total[0], consistency[0], entropy[0]
    return total, consistency, entropy


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
    drop_last: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
) -> None:
    """SCAN's self-labelling step (section 2.3) on a one-head ``head``, in place.

    Each step takes a batch of ``batch_size`` samples, labels the confident ones by the head's own
    prediction on the clean features ``X[idx]`` (the weak view) and trains the head with
    :func:`scan_self_label_loss` on ``view(idx)`` (the strong view), with Adam; with
    ``drop_last`` the last incomplete batch of each epoch is skipped (SCAN's loader). Uses torch's
    global RNG (seed it around the call). ``on_epoch(epoch, mean loss)`` is called after each
    epoch (1-based), e.g. for a progress bar.
    """
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for epoch in range(1, epochs + 1):
        batches = epoch_batches(X.shape[0], batch_size, X.device, drop_last=drop_last)
        total = X.new_zeros(())
        for idx in batches:
            with torch.no_grad():
                weak = head(X[idx])[0]
            loss = scan_self_label_loss(weak, head(view(idx))[0], threshold, class_balance)
            optimizer_step(opt, loss)
            if on_epoch is not None:
                total += loss.detach()
        if on_epoch is not None:
            on_epoch(epoch, float(total) / len(batches))
