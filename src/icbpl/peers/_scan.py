"""SCAN on frozen features: the clustering step and the self-labelling step.

Van Gansbeke, Vandenhende, Georgoulis, Proesmans, Van Gool, "SCAN: Learning to Classify Images
without Labels", ECCV 2020 (arXiv 2005.12320). Section 2.2 (clustering step, eq. 2) and
section 2.3 (self-labelling), checked against the authors' code
(``wvangansbeke/Unsupervised-Classification``: ``losses/losses.py``, ``scan.py``,
``selflabel.py``, ``configs/scan/scan_cifar10.yml``, ``configs/selflabel/selflabel_cifar10.yml``).

Two schedules (docs/notes/peers.md compares every value with the authors'):

- ``"official"`` (the function's defaults): the CIFAR-10 configs. One head, Adam lr 1e-4, weight
  decay 1e-4, batch 128, 50 epochs, entropy weight 5, 20 neighbours drawn together with the
  sample itself; after every epoch the SCAN loss with entropy weight 1 on each sample and its
  first 5 neighbours (and itself) is computed and the lowest-loss epoch and head are kept; then
  200 self-labelling epochs (Adam 1e-4, batch 1000, threshold 0.99, class-balanced).
- ``"tuned"``: our variant for frozen features, stronger here (SCAN trains its backbone too, we
  only train a linear head): 10 heads, lr 1e-3, the head with the lowest training loss after the
  last epoch, 50 self-labelling epochs at lr 1e-3.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from icbpl.peers._augment import view_sampler
from icbpl.peers._heads import MultiLinear, select_head
from icbpl.peers._registry import (
    PeerResult,
    Schedule,
    register_peer,
    resolve_neighbours,
    to_result,
)

__all__ = ["scan_eval_loss", "scan_loss", "scan_self_label_loss", "self_label_head"]

logger = logging.getLogger(__name__)

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
    n = X.shape[0]
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    bs = min(batch_size, n)
    steps = max(1, n // bs) if drop_last else math.ceil(n / bs)
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


_OFFICIAL = Schedule(
    label="1 head, Adam 1e-4, batch 128, 50 epochs, lowest-loss epoch kept; "
    "self-labelling 200 epochs at 1e-4"
)
_TUNED = Schedule(
    options={
        "n_heads": 10,
        "lr": 1e-3,
        "include_self": False,
        "selection": "last_epoch",
        "self_label_epochs": 50,
        "self_label_lr": 1e-3,
    },
    label="10 heads, Adam 1e-3, batch 128, 50 epochs, lowest-loss head at the end; "
    "self-labelling 50 epochs at 1e-3",
)
_SELECTIONS = ("best_epoch", "last_epoch")


@register_peer("scan", schedules={"official": _OFFICIAL, "tuned": _TUNED})
def fit_scan(
    X: Tensor,
    n_clusters: int,
    *,
    neighbours: Tensor | None,
    views: Tensor | None,
    seed: int,
    n_neighbours: int | None = None,
    include_self: bool = True,
    n_heads: int = 1,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    entropy_weight: float = 5.0,
    selection: str = "best_epoch",
    select_neighbours: int = 5,
    self_label: bool = True,
    self_label_epochs: int = 200,
    self_label_batch_size: int = 1000,
    self_label_lr: float = 1e-4,
    threshold: float = 0.99,
    class_balance: bool = True,
    noise_std: float = 0.1,
    feature_dropout: float = 0.1,
) -> PeerResult:
    """SCAN's clustering step then its self-labelling step, on frozen features.

    Clustering step: ``n_heads`` linear heads ``softmax(W_h x + b_h)`` are trained together with
    Adam on :func:`scan_loss` (summed over heads; all heads in one batched matmul). Each step
    draws a batch of anchors (the last incomplete batch is dropped) and, for each, one partner
    at random from its ``n_neighbours`` mined ones (default 20, cosine, faiss) or given
    ``neighbours``, together with the anchor itself when ``include_self`` (SCAN mines the top
    ``K + 1`` with the sample itself among them and draws from those). Anchors and partners enter
    as augmented views (SCAN augments both): a random precomputed view when ``views`` is given,
    else the feature with Gaussian noise (``noise_std`` x per-dimension std) and dimension
    dropout (``feature_dropout``).

    Which head is kept: ``selection="best_epoch"`` (SCAN's): after every epoch,
    :func:`scan_eval_loss` with entropy weight 1 over each sample, itself and its first
    ``select_neighbours`` neighbours is computed on the clean features for every head; the
    epoch and head with the lowest value are kept. ``"last_epoch"``: after the last epoch, the
    head with the lowest :func:`scan_eval_loss` at ``entropy_weight`` over all neighbours.

    Self-labelling (``self_label=True``): the kept head is fine-tuned on
    :func:`scan_self_label_loss` with the clean feature as the weak view and an augmented view
    (as above) as the strong one; the last epoch's head gives the result, as in SCAN.

    ``info`` holds the per-head losses, the chosen head and epoch, and the number of confident
    samples at the end.
    """
    for name, value in [
        ("n_heads", n_heads),
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("self_label_batch_size", self_label_batch_size),
        ("select_neighbours", select_neighbours),
    ]:
        if value < 1:
            raise ValueError(f"{name}={value} should be >= 1")
    if self_label_epochs < 0:
        raise ValueError(f"self_label_epochs={self_label_epochs} should be >= 0")
    if not 0.0 <= feature_dropout < 1.0:
        raise ValueError(f"feature_dropout={feature_dropout} should be in [0, 1)")
    if selection not in _SELECTIONS:
        raise ValueError(f"selection={selection!r} should be one of {_SELECTIONS}")
    nbrs = resolve_neighbours(X, neighbours, n_neighbours, default=20)
    n, d = X.shape
    view = view_sampler(X, views, noise_std=noise_std, dropout=feature_dropout)
    own = torch.arange(n, device=X.device).unsqueeze(1)
    pool = torch.cat([own, nbrs], dim=1) if include_self else nbrs
    eval_pool = torch.cat([own, nbrs[:, :select_neighbours]], dim=1)

    heads = MultiLinear(n_heads, d, n_clusters, device=X.device)
    opt = torch.optim.Adam(heads.parameters(), lr=lr, weight_decay=weight_decay)
    bs = min(batch_size, n)
    steps = max(1, n // bs)  # SCAN drops the last incomplete batch
    best: tuple[float, int, int] = (math.inf, 0, 0)  # (loss, epoch, head)
    kept = heads.select(0)
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n, device=X.device)
        for s in range(steps):
            idx = perm[s * bs : (s + 1) * bs]
            pick = torch.randint(pool.shape[1], (idx.shape[0],), device=X.device)
            nb = pool[idx, pick]
            total, _, _ = scan_loss(
                heads(view(idx)).softmax(-1), heads(view(nb)).softmax(-1), entropy_weight
            )
            opt.zero_grad(set_to_none=True)
            total.sum().backward()
            opt.step()
        if selection == "best_epoch":
            with torch.no_grad():
                losses, _, _ = scan_eval_loss(heads(X).softmax(-1), eval_pool, 1.0)
            h = select_head(losses)
            if float(losses[h]) < best[0]:
                best = (float(losses[h]), epoch, h)
                kept = heads.select(h)
        logger.debug("scan epoch %d: head losses %s", epoch, total.detach().tolist())

    with torch.no_grad():
        probs = heads(X).softmax(-1)  # (H, N, k), the last epoch
        totals, cons, ents = scan_eval_loss(probs, nbrs, entropy_weight)
    if selection == "last_epoch":
        h = select_head(totals)
        best = (float(totals[h]), epochs, h)
        kept = heads.select(h)
    head = kept
    info: dict[str, object] = {
        "n_neighbours": int(nbrs.shape[1]),
        "n_heads": n_heads,
        "epochs": epochs,
        "head_losses": totals.tolist(),
        "selection": selection,
        "best_head": best[2],
        "best_epoch": best[1],
        "selection_loss": best[0],
        "consistency": float(cons[best[2]]),
        "entropy": float(ents[best[2]]),
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
            drop_last=True,
        )
        info["self_label_epochs"] = self_label_epochs

    with torch.no_grad():
        final = head(X)[0].softmax(-1)
    info["n_confident"] = int((final.max(dim=-1).values > threshold).sum())
    return to_result(final, info)
