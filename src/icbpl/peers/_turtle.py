"""TURTLE: search for the labelling whose linear classifier generalises best (single space).

Gadetsky, Jiang, Brbić, "Let Go of Your Labels with Unsupervised Transfer", ICML 2024
(arXiv 2406.07236), section 3: a task encoder ``τ_θ(x) = softmax(θ φ(x))`` labels the data; an
inner linear classifier ``w`` is trained for ``M`` steps on those labels; ``θ`` is updated so that
the classifier's cross-entropy against ``τ_θ`` is small (a max-margin labelling) while an entropy
regulariser keeps the clusters balanced (eq. 12). Defaults follow the authors' ``run_turtle.py``
(gamma 10, M = 10 inner Adam steps at lr 1e-3 with a cold start every iteration, outer Adam at
lr 1e-3, batch 10000, weight-normed task encoder), with fewer iterations (CPU-friendly; the paper
uses 6000).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icbpl.peers._registry import PeerResult, register_peer, to_result

__all__ = ["turtle_loss"]

logger = logging.getLogger(__name__)


def turtle_loss(
    task_probs: Tensor, inner_logits: Tensor, gamma: float = 10.0
) -> tuple[Tensor, Tensor, Tensor]:
    """TURTLE's outer objective for one representation space (paper eq. 12).

    ``L(θ) = 1/B Σ_i CE(w^M φ(x_i), τ_θ(x_i)) - γ H(τ̄_θ)``, ``τ̄_θ = 1/B Σ_i τ_θ(x_i)``,
    ``CE(l, p) = -Σ_c p_c log softmax(l)_c``, ``H(q) = -Σ_c q_c log q_c``

    where ``w^M`` is the inner classifier after ``M`` steps on the labels ``τ_θ``. Its logits are
    treated as constants: as in the authors' implementation the gradient reaches ``θ`` through
    the labels only (the dependence of ``w^M`` on ``θ`` is dropped).

    Args:
        task_probs: ``τ_θ(x)``, ``(B, k)`` rows on the simplex.
        inner_logits: ``w^M φ(x)``, ``(B, k)``.
        gamma: entropy weight ``γ`` (10 in the paper).

    Returns:
        ``(total, prediction_error, entropy)``, scalars; ``total = prediction_error - γ entropy``.
    """
    log_q = F.log_softmax(inner_logits.detach(), dim=-1)
    pred_error = -(task_probs * log_q).sum(dim=-1).mean()
    entropy = torch.special.entr(task_probs.mean(dim=0)).sum()
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


@register_peer("turtle")
def fit_turtle(
    X: Tensor,
    n_clusters: int,
    *,
    neighbours: Tensor | None,
    views: Tensor | None,
    seed: int,
    gamma: float = 10.0,
    iterations: int = 1000,
    inner_steps: int = 10,
    inner_lr: float = 1e-3,
    outer_lr: float = 1e-3,
    batch_size: int = 10000,
    warm_start: bool = False,
    normalize: bool = False,
) -> PeerResult:
    """TURTLE with one representation space, by alternating first-order bilevel optimisation.

    Each of the ``iterations`` (the paper's ``T``) draws a batch of ``min(batch_size, N)``
    samples without replacement, labels it with the weight-normed linear task encoder
    ``τ_θ = softmax(θ x)``, trains a linear classifier on those (detached) soft labels for
    ``inner_steps`` Adam steps (``M``; re-initialised every iteration unless ``warm_start``),
    then takes one Adam step on ``θ`` for :func:`turtle_loss`. Features are used raw, as in the
    paper (``normalize=True`` L2-normalises them first). ``neighbours`` and ``views`` are not
    used by TURTLE. ``probs`` is ``τ_θ`` on all samples.
    """
    for name, value in [
        ("iterations", iterations),
        ("inner_steps", inner_steps),
        ("batch_size", batch_size),
    ]:
        if value < 1:
            raise ValueError(f"{name}={value} should be >= 1")
    x = F.normalize(X, dim=1, eps=1e-12) if normalize else X
    n, d = x.shape
    task = _WeightNormLinear(d, n_clusters, X.device)
    opt = torch.optim.Adam(task.parameters(), lr=outer_lr, betas=(0.9, 0.999))
    bs = min(batch_size, n)

    inner = _InnerClassifier(d, n_clusters, X.device, lr=inner_lr)
    total = pred = ent = torch.zeros(())
    log_every = max(1, iterations // 10)
    for it in range(iterations):
        idx = torch.randperm(n, device=X.device)[:bs]
        z = x[idx]
        labels = task(z).softmax(dim=-1)
        if not warm_start and it > 0:
            inner = _InnerClassifier(d, n_clusters, X.device, lr=inner_lr)
        inner.fit(z, labels.detach(), inner_steps)
        total, pred, ent = turtle_loss(labels, inner.logits(z), gamma)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if (it + 1) % log_every == 0:
            logger.debug(
                "turtle iter %d: prediction error %.4f, entropy %.4f (max %.4f)",
                it + 1,
                pred.item(),
                ent.item(),
                math.log(n_clusters),
            )

    with torch.no_grad():
        probs = task(x).softmax(dim=-1)
    info = {
        "gamma": gamma,
        "iterations": iterations,
        "inner_steps": inner_steps,
        "prediction_error": pred.item(),
        "entropy": ent.item(),
        "loss": total.item(),
    }
    return to_result(probs, info)
