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
from torch import Tensor

from icbpl.core.multihead import MultiLinear, optimizer_step, select_head
from icbpl.core.scan import scan_eval_loss, scan_loss, self_label_head
from icbpl.core.views import epoch_batches, random_partners, view_sampler
from icbpl.peers._registry import PeerResult, Schedule, register_peer, resolve_neighbours, to_result

logger = logging.getLogger(__name__)


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


def _cluster_step(
    heads: MultiLinear,
    opt: torch.optim.Optimizer,
    X: Tensor,
    nbrs: Tensor,
    pool: Tensor,
    view: Callable[[Tensor], Tensor],
    *,
    epochs: int,
    batch_size: int,
    entropy_weight: float,
    selection: str,
    select_neighbours: int,
) -> tuple[MultiLinear, dict[str, object]]:
    """SCAN's clustering step: the ``n_heads`` linear heads ``softmax(W_h x + b_h)`` of ``heads``
    trained together by ``opt`` on :func:`scan_loss` (summed over heads; all heads in one batched
    matmul); returns a one-head copy of the kept head and the step's ``info``.

    Each step draws a batch of anchors (the last incomplete batch is dropped) and, for each, one
    partner at random from its row of ``pool``; both enter as ``view``.

    Which head is kept: ``selection="best_epoch"`` (SCAN's): after every epoch,
    :func:`scan_eval_loss` with entropy weight 1 over each sample, itself and its first
    ``select_neighbours`` neighbours is computed on the clean features for every head; the
    epoch and head with the lowest value are kept. ``"last_epoch"``: after the last epoch, the
    head with the lowest :func:`scan_eval_loss` at ``entropy_weight`` over all neighbours.
    """
    own = torch.arange(X.shape[0], device=X.device).unsqueeze(1)
    eval_pool = torch.cat([own, nbrs[:, :select_neighbours]], dim=1)
    best: tuple[float, int, int] = (math.inf, 0, 0)  # (loss, epoch, head)
    kept = heads.select(0)
    for epoch in range(1, epochs + 1):
        for idx in epoch_batches(X.shape[0], batch_size, X.device, drop_last=True):
            nb = random_partners(pool, idx)
            total, _, _ = scan_loss(
                heads(view(idx)).softmax(-1), heads(view(nb)).softmax(-1), entropy_weight
            )
            optimizer_step(opt, total.sum())
        if selection == "best_epoch":
            with torch.no_grad():
                losses, _, _ = scan_eval_loss(heads(X).softmax(-1), eval_pool, 1.0)
            h = select_head(losses)
            if float(losses[h]) < best[0]:
                best = (float(losses[h]), epoch, h)
                kept = heads.select(h)
        logger.debug("scan epoch %d: head losses %s", epoch, total.detach().tolist())

    with torch.no_grad():
        totals, cons, ents = scan_eval_loss(heads(X).softmax(-1), nbrs, entropy_weight)
    if selection == "last_epoch":
        h = select_head(totals)
        best = (float(totals[h]), epochs, h)
        kept = heads.select(h)
    info: dict[str, object] = {
        "n_neighbours": int(nbrs.shape[1]),
        "n_heads": heads.n_heads,
        "epochs": epochs,
        "head_losses": totals.tolist(),
        "selection": selection,
        "best_head": best[2],
        "best_epoch": best[1],
        "selection_loss": best[0],
        "consistency": float(cons[best[2]]),
        "entropy": float(ents[best[2]]),
    }
    return kept, info


_MINIMUMS = {
    "n_heads": 1,
    "epochs": 1,
    "batch_size": 1,
    "self_label_batch_size": 1,
    "select_neighbours": 1,
    "self_label_epochs": 0,
}


@register_peer("scan", schedules={"official": _OFFICIAL, "tuned": _TUNED}, minimums=_MINIMUMS)
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
    """SCAN's clustering step (:func:`_cluster_step`), then its self-labelling, on frozen features.

    Partners are drawn from the ``n_neighbours`` mined neighbours (default 20, cosine, faiss) or
    the given ``neighbours``, and the anchor itself when ``include_self`` (SCAN mines the top
    ``K + 1``, the sample among them). Anchors and partners enter as augmented views (SCAN
    augments both): a random precomputed view when ``views`` is given, else the feature with
    Gaussian noise (``noise_std`` x per-dimension std) and dimension dropout (``feature_dropout``).
    Self-labelling (``self_label=True``) fine-tunes the kept head by
    :func:`icbpl.core.scan.self_label_head`, the clean feature as the weak view and an augmented
    view as the strong one; the last epoch's head gives the result, as in SCAN. ``info`` holds the
    per-head losses, the chosen head and epoch, and the number of confident samples at the end.
    """
    if not 0.0 <= feature_dropout < 1.0:
        raise ValueError(f"feature_dropout={feature_dropout} should be in [0, 1)")
    if selection not in _SELECTIONS:
        raise ValueError(f"selection={selection!r} should be one of {_SELECTIONS}")
    nbrs = resolve_neighbours(X, neighbours, n_neighbours, default=20)
    view = view_sampler(X, views, noise_std=noise_std, dropout=feature_dropout)
    own = torch.arange(X.shape[0], device=X.device).unsqueeze(1)
    pool = torch.cat([own, nbrs], dim=1) if include_self else nbrs
    heads = MultiLinear(n_heads, X.shape[1], n_clusters, device=X.device)
    opt = torch.optim.Adam(heads.parameters(), lr=lr, weight_decay=weight_decay)
    head, info = _cluster_step(
        heads,
        opt,
        X,
        nbrs,
        pool,
        view,
        epochs=epochs,
        batch_size=batch_size,
        entropy_weight=entropy_weight,
        selection=selection,
        select_neighbours=select_neighbours,
    )
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
