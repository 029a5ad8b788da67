"""TURTLE: search for the labelling whose linear classifiers generalise best.

Gadetsky, Jiang, Brbić, "Let Go of Your Labels with Unsupervised Transfer", ICML 2024
(arXiv 2406.07236), section 3, checked against the authors' ``run_turtle.py``
(``mlbio-epfl/turtle``): a task encoder ``τ_θ(x) = 1/K Σ_k softmax(θ_k φ_k(x))`` labels the data
from ``K`` representation spaces ``φ_k`` (eq. 9); per space a linear classifier ``w_k`` is trained
for ``M`` steps on those labels; ``θ`` is updated so that the classifiers' cross-entropy against
``τ_θ`` is small (a max-margin labelling) while an entropy regulariser keeps the clusters
balanced (eq. 12). One schedule, ``"official"`` (the function's defaults, the script's): gamma
10, T = 6000 outer iterations of M = 10 inner Adam steps at lr 1e-3 with a cold start every
iteration, outer Adam at lr 1e-3, batch 10000, weight-normed task encoder, raw features.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icbpl.core.multihead import optimizer_step
from icbpl.peers._registry import PeerResult, Schedule, as_float_tensor, register_peer, to_result

__all__ = ["turtle_loss"]

logger = logging.getLogger(__name__)


def turtle_loss(
    task_probs: Tensor | Sequence[Tensor],
    inner_logits: Tensor | Sequence[Tensor],
    gamma: float = 10.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """TURTLE's outer objective (paper eq. 12), for one or ``K`` representation spaces.

    ``L(θ) = Σ_k 1/B Σ_i CE(w_k^M φ_k(x_i), τ_θ(x_i)) - γ Σ_k H(τ̄_k)``, with
    ``τ_θ(x) = 1/K Σ_k τ_k(x)``, ``τ_k(x) = softmax(θ_k φ_k(x))``, ``τ̄_k = 1/B Σ_i τ_k(x_i)``,
    ``CE(l, p) = -Σ_c p_c log softmax(l)_c``, ``H(q) = -Σ_c q_c log q_c``

    where ``w_k^M`` is space ``k``'s inner classifier after ``M`` steps on the labels ``τ_θ``. As
    in the authors' ``run_turtle.py`` the entropy is that of each space's own marginal, summed
    over spaces, and the inner logits are constants: the gradient reaches ``θ`` through the
    labels only (the dependence of ``w^M`` on ``θ`` is dropped, eq. 13).

    Args:
        task_probs: ``τ_k(x)``, ``(B, k)`` rows on the simplex, one tensor per space (or one
            tensor for a single space).
        inner_logits: ``w_k^M φ_k(x)``, ``(B, k)``, one per space, in the same order.
        gamma: entropy weight ``γ`` (10 in the paper).

    Returns:
        ``(total, prediction_error, entropy)``, scalars; ``total = prediction_error - γ entropy``.
    """
    probs = [task_probs] if isinstance(task_probs, Tensor) else list(task_probs)
    logits = [inner_logits] if isinstance(inner_logits, Tensor) else list(inner_logits)
    if len(probs) != len(logits) or not probs:
        raise ValueError(f"got {len(probs)} task_probs for {len(logits)} inner_logits")
    labels = probs[0] if len(probs) == 1 else torch.stack(probs).mean(dim=0)
    pred_error = sum(
        (-(labels * F.log_softmax(lg.detach(), dim=-1)).sum(dim=-1).mean() for lg in logits),
        start=labels.new_zeros(()),
    )
    entropy = sum(
        (torch.special.entr(p.mean(dim=0)).sum() for p in probs), start=labels.new_zeros(())
    )
    return pred_error - gamma * entropy, pred_error, entropy


class _WeightNormLinear(nn.Module):
    """``x -> x (g v / ||v||)^T + b`` with one norm per output row (``nn.utils.weight_norm``)."""

    def __init__(self, in_dim: int, out_dim: int, device: torch.device) -> None:
        super().__init__()
        lin = nn.Linear(in_dim, out_dim, device=device)
        self.v = nn.Parameter(lin.weight.detach().clone())
        self.g = nn.Parameter(lin.weight.detach().norm(dim=1, keepdim=True))
        self.b = nn.Parameter(lin.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        """(B, in) -> (B, out)."""
        w = self.g * self.v / self.v.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return F.linear(x, w, self.b)


class _InnerClassifier:
    """The inner linear classifier ``w`` trained by Adam on soft labels, without autograd.

    Initialised like :class:`torch.nn.Linear`; :meth:`fit` takes Adam steps (betas 0.9/0.999,
    eps 1e-8, bias-corrected, as :class:`torch.optim.Adam`) on the mean soft-label
    cross-entropy, whose gradient is ``(softmax(w z) - y)^T z / B``. Hand-written because this
    loop is TURTLE's hot path (``M`` steps per outer iteration).
    """

    def __init__(self, in_dim: int, out_dim: int, device: torch.device, lr: float) -> None:
        lin = nn.Linear(in_dim, out_dim, device=device)
        self.params = [lin.weight.detach().clone(), lin.bias.detach().clone()]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0
        self.lr = lr

    def logits(self, z: Tensor) -> Tensor:
        """(B, in) -> (B, out)."""
        return F.linear(z, self.params[0], self.params[1])

    @torch.no_grad()
    def fit(self, z: Tensor, target: Tensor, steps: int) -> None:
        """``steps`` Adam steps on ``CE(w z, target)`` (target: soft labels, (B, out))."""
        b1, b2, eps = 0.9, 0.999, 1e-8
        for _ in range(steps):
            err = (self.logits(z).softmax(dim=-1) - target) / z.shape[0]
            grads = [err.T @ z, err.sum(dim=0)]
            self.t += 1
            c1, c2 = 1 - b1**self.t, 1 - b2**self.t
            for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                p.addcdiv_(m, (v / c2).sqrt_().add_(eps), value=-self.lr / c1)


def _as_spaces(X: Tensor, spaces: Sequence[Any] | None) -> list[Tensor]:
    out = [X]
    for i, z in enumerate(spaces or []):
        t = as_float_tensor(z, f"spaces[{i}]", X.device)
        if t.ndim != 2 or t.shape[0] != X.shape[0] or t.shape[1] < 1:
            raise ValueError(
                f"spaces[{i}] should have shape ({X.shape[0]}, n_features) to match X, "
                f"got {tuple(t.shape)}"
            )
        out.append(t)
    return out


_OFFICIAL = Schedule(
    label="T 6000 outer iterations x M 10 inner Adam steps (cold start), lr 1e-3 / 1e-3, "
    "batch 10000, gamma 10"
)


def _outer_step(
    tasks: list[_WeightNormLinear],
    inners: list[_InnerClassifier],
    zs: list[Tensor],
    inner_steps: int,
    gamma: float,
    opt: torch.optim.Optimizer,
) -> tuple[Tensor, Tensor, Tensor]:
    """One outer iteration: the task labels on the batch, ``inner_steps`` steps of each inner
    classifier towards them, then one Adam step of the tasks on `turtle_loss`."""
    per_space = [task(z).softmax(dim=-1) for task, z in zip(tasks, zs, strict=True)]
    labels = per_space[0] if len(per_space) == 1 else torch.stack(per_space).mean(dim=0)
    target = labels.detach()
    for inner, z in zip(inners, zs, strict=True):
        inner.fit(z, target, inner_steps)
    logits = [inner.logits(z) for inner, z in zip(inners, zs, strict=True)]
    total, pred, ent = turtle_loss(per_space, logits, gamma)
    optimizer_step(opt, total)
    return total, pred, ent


_MINIMUMS = {"iterations": 1, "inner_steps": 1, "batch_size": 1}


@register_peer("turtle", schedules={"official": _OFFICIAL}, minimums=_MINIMUMS)
def fit_turtle(
    X: Tensor,
    n_clusters: int,
    *,
    neighbours: Tensor | None,
    views: Tensor | None,
    seed: int,
    gamma: float = 10.0,
    iterations: int = 6000,
    inner_steps: int = 10,
    inner_lr: float = 1e-3,
    outer_lr: float = 1e-3,
    batch_size: int = 10000,
    warm_start: bool = False,
    normalize: bool = False,
    spaces: Sequence[Any] | None = None,
) -> PeerResult:
    """TURTLE by alternating first-order bilevel optimisation, on ``X`` and any extra ``spaces``.

    ``spaces``: other representations of the same ``N`` samples (e.g. another encoder's
    features), a sequence of ``(N, D_k)`` arrays; TURTLE's strongest results use two spaces.
    Each of the ``iterations`` (the paper's ``T``) draws a batch of ``min(batch_size, N)``
    samples without replacement (all samples, unshuffled, when ``N <= batch_size``: the
    objective does not depend on their order), labels it with the average over spaces of the
    weight-normed linear task encoders ``softmax(θ_k φ_k(x))``, trains one linear classifier per
    space on those (detached) soft labels for ``inner_steps`` Adam steps (``M``; re-initialised
    every iteration unless ``warm_start``), then takes one Adam step on all ``θ_k`` for
    :func:`turtle_loss`. Features are used raw, as in the paper (``normalize=True``
    L2-normalises every space first). ``neighbours`` and ``views`` are not used by TURTLE.
    ``probs`` is ``τ_θ`` on all samples.
    """
    xs = _as_spaces(X, spaces)
    if normalize:
        xs = [F.normalize(x, dim=1, eps=1e-12) for x in xs]
    n = X.shape[0]
    dims = [x.shape[1] for x in xs]
    tasks = [_WeightNormLinear(d, n_clusters, X.device) for d in dims]
    opt = torch.optim.Adam(
        [p for task in tasks for p in task.parameters()], lr=outer_lr, betas=(0.9, 0.999)
    )
    bs = min(batch_size, n)

    def new_inner() -> list[_InnerClassifier]:
        return [_InnerClassifier(d, n_clusters, X.device, lr=inner_lr) for d in dims]

    inners = new_inner()
    total = pred = ent = torch.zeros(())
    log_every = max(1, iterations // 10)
    for it in range(iterations):
        if bs < n:
            idx = torch.randperm(n, device=X.device)[:bs]
            zs = [x[idx] for x in xs]
        else:
            zs = xs
        if not warm_start and it > 0:
            inners = new_inner()
        total, pred, ent = _outer_step(tasks, inners, zs, inner_steps, gamma, opt)
        if (it + 1) % log_every == 0:
            bound = len(xs) * math.log(n_clusters)
            msg = "turtle iter %d: prediction error %.4f, entropy %.4f (max %.4f)"
            logger.debug(msg, it + 1, pred.item(), ent.item(), bound)

    with torch.no_grad():
        probs = torch.stack(
            [task(x).softmax(dim=-1) for task, x in zip(tasks, xs, strict=True)]
        ).mean(dim=0)
    info = {
        "gamma": gamma,
        "iterations": iterations,
        "inner_steps": inner_steps,
        "n_spaces": len(xs),
        "prediction_error": pred.item(),
        "entropy": ent.item(),
        "loss": total.item(),
    }
    return to_result(probs, info)
