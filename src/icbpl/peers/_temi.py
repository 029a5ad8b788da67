"""TEMI: teacher-student clustering heads trained with a weighted pointwise-mutual-information loss.

Adaloglou, Michels, Kalisch, Kollmann, "Exploring the Limits of Deep Image Clustering using
Pretrained Models", BMVC 2023 (arXiv 2303.17896), section 3, checked against the authors' code
(``HHU-MMBS/TEMI-official-BMVC2023``: ``losses/multihead_losses.py``, ``losses/loss_utils.py``,
``model_builders/multi_head.py``, ``train_main.py``, ``main_args.py`` and the README's CIFAR-10
command).

Two schedules (docs/notes/peers.md compares every value with the authors'):

- ``"official"`` (the function's defaults): the README's command for precomputed embeddings:
  16 heads, beta 0.6, 50 neighbours, batch 1024, 100 epochs, AdamW at lr 1e-4 per 256 samples
  (constant after a 20-epoch linear warm-up from 0), weight decay 1e-4, teacher momentum 0.996,
  temperatures 0.1, the 512 -> 256 -> weight-normed k-way head with its last layer frozen in the
  first epoch, no augmentation of the embeddings (the pair is a sample and a neighbour).
- ``"tuned"``: our variant: 30 epochs, batch 256, 6 warm-up epochs, and each member of
  a pair as a random one of the precomputed augmented views when ``views`` are given (TEMI's
  image pipeline augments; its embedding pipeline does not).
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icbpl.core.multihead import MultiLinear, lr_schedule, optimizer_step, select_head
from icbpl.core.views import epoch_batches, random_partners, view_sampler
from icbpl.peers._registry import PeerResult, Schedule, register_peer, resolve_neighbours, to_result

__all__ = ["temi_loss"]

logger = logging.getLogger(__name__)


def temi_loss(
    student_a: Tensor,
    student_b: Tensor,
    teacher_a: Tensor,
    teacher_b: Tensor,
    cluster_prior: Tensor,
    beta: float = 0.6,
) -> Tensor:
    """TEMI loss of each head for a batch of pairs ``(x, x')`` (paper section 3).

    With student / teacher cluster probabilities ``q_s``, ``q_t`` and the teacher's running
    cluster marginal ``q̃(c)`` (``cluster_prior``), the beta-PMI of a student-teacher pair is

    ``pmi_β(x, x') = log Σ_c (q_s(c|x) q_t(c|x'))^β / q̃(c)``

    and the loss, symmetrised over which member of the pair the teacher sees, is

    ``L = -1/2 · mean_B w(x, x') [pmi_β(x, x') + pmi_β(x', x)]``,
    ``w(x, x') = Σ_c q_t(c|x) q_t(c|x')``

    The instance weight ``w`` (the "weighted MI" of the paper) is computed from the teacher
    without gradient and, as in the authors' ``MultiHeadWeightProbBase``, averaged over heads so
    that all heads share one weight per pair. ``β = 1`` and ``w = 1`` recover plain PMI.

    Args:
        student_a, student_b: student probabilities of ``x`` and ``x'``, ``(H, B, k)`` or
            ``(B, k)``.
        teacher_a, teacher_b: teacher probabilities, same shapes (treated as constants).
        cluster_prior: ``q̃``, ``(H, k)`` or ``(k,)``.
        beta: exponent ``β`` (0.6 in the paper).

    Returns:
        loss of each head, ``(H,)`` (a scalar for 2-D inputs).
    """
    single = student_a.ndim == 2
    if single:
        student_a, student_b = student_a.unsqueeze(0), student_b.unsqueeze(0)
        teacher_a, teacher_b = teacher_a.unsqueeze(0), teacher_b.unsqueeze(0)
        cluster_prior = cluster_prior.reshape(1, -1)
    ta, tb = teacher_a.detach(), teacher_b.detach()
    prior = cluster_prior.detach().unsqueeze(1)  # (H, 1, k)
    weight = (ta * tb).sum(dim=-1).mean(dim=0)  # (B,), shared by the heads

    def pmi(s: Tensor, t: Tensor) -> Tensor:
        return ((s * t).pow(beta) / prior).sum(dim=-1).log()  # (H, B)

    per_pair = -0.5 * weight * (pmi(student_b, ta) + pmi(student_a, tb))
    loss = per_pair.mean(dim=-1)
    return loss[0] if single else loss


class _TemiHeads(nn.Module):
    """``H`` DINO-style heads: MLP -> L2-normalise -> weight-normed linear layer to k logits."""

    def __init__(
        self,
        n_heads: int,
        in_dim: int,
        n_clusters: int,
        hidden_dim: int,
        bottleneck_dim: int,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.fc1 = MultiLinear(n_heads, in_dim, hidden_dim, init_std=0.02, device=device)
        self.fc2 = MultiLinear(n_heads, hidden_dim, bottleneck_dim, init_std=0.02, device=device)
        last = MultiLinear(n_heads, bottleneck_dim, n_clusters, bias=False, device=device)
        self.last_v = nn.Parameter(last.weight.detach().clone())  # direction, (H, bottleneck, k)
        self.last_g = nn.Parameter(torch.ones(n_heads, 1, n_clusters, device=device))  # norm

    def forward(self, x: Tensor, head: int | None = None) -> Tensor:
        """(B, D) -> logits (H, B, k) of all heads, or (1, B, k) of head ``head`` alone."""
        sl = slice(None) if head is None else slice(head, head + 1)

        def linear(layer: MultiLinear, a: Tensor) -> Tensor:
            if head is None:
                return layer(a)
            out = torch.matmul(a, layer.weight[sl])
            return out + layer.bias[sl] if layer.bias is not None else out

        z = F.normalize(linear(self.fc2, F.gelu(linear(self.fc1, x))), dim=-1)
        v, g = self.last_v[sl], self.last_g[sl]
        return torch.matmul(z, g * v / v.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def last_layer(self) -> list[nn.Parameter]:
        """Parameters of the k-way layer (frozen during the first epochs)."""
        return [self.last_v, self.last_g]


class _Distillation:
    """TEMI's student heads, their EMA teacher, AdamW on the student (biases not weight-decayed)
    and the teacher's cluster prior ``q̃``."""

    def __init__(
        self,
        student: _TemiHeads,
        weight_decay: float,
        beta: float,
        temps: tuple[float, float],
        momenta: tuple[float, float],
        bf16: bool,
    ) -> None:
        device = student.last_g.device
        n_heads, _, n_clusters = student.last_g.shape
        self.student = student
        self.teacher = copy.deepcopy(student).requires_grad_(False)
        named = list(student.named_parameters())
        decay = [p for k, p in named if not k.endswith("bias")]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": [p for k, p in named if k.endswith("bias")], "weight_decay": 0.0},
        ]
        fused = device.type in ("cpu", "cuda")  # one kernel per step instead of ~10 passes
        self.opt = torch.optim.AdamW(groups, fused=fused)
        self.beta = beta
        self.student_temp, self.teacher_temp = temps
        self.teacher_momentum, self.prior_momentum = momenta
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
        self.prior = torch.full((n_heads, n_clusters), 1.0 / n_clusters, device=device)

    def step(self, pair: Tensor, lr: float, freeze_last_layer: bool) -> Tensor:
        """One AdamW step at ``lr`` on a batch of pairs (``pair``: ``m`` samples, then their ``m``
        partners), then the teacher's EMA; the per-head losses, ``(H,)``."""
        with torch.no_grad():
            with self.autocast:
                t_logits = self.teacher(pair)
            t = (t_logits.float() / self.teacher_temp).softmax(-1)
            mom = self.prior_momentum
            self.prior = mom * self.prior + (1 - mom) * t.mean(dim=1)
        with self.autocast:
            s_logits = self.student(pair)
        sp = (s_logits.float() / self.student_temp).softmax(-1)
        m = pair.shape[0] // 2
        losses = temi_loss(sp[:, :m], sp[:, m:], t[:, :m], t[:, m:], self.prior, self.beta)
        for group in self.opt.param_groups:
            group["lr"] = lr
        frozen = self.student.last_layer() if freeze_last_layer else ()
        optimizer_step(self.opt, losses.mean(), frozen)
        with torch.no_grad():
            for pt, ps in zip(self.teacher.parameters(), self.student.parameters(), strict=True):
                pt.lerp_(ps.detach(), 1 - self.teacher_momentum)  # m pt + (1 - m) ps, one pass
        return losses.detach()


_OFFICIAL = Schedule(
    label="16 heads, batch 1024, 100 epochs (20 warm-up), AdamW 1e-4 x batch/256, no views"
)
_TUNED = Schedule(
    options={"epochs": 30, "batch_size": 256, "warmup_epochs": 6, "use_views": True},
    label="16 heads, batch 256, 30 epochs (6 warm-up), AdamW 1e-4 x batch/256, with views",
)
_MINIMUMS = {
    "n_heads": 1,
    "epochs": 1,
    "batch_size": 1,
    "hidden_dim": 1,
    "bottleneck_dim": 1,
    "warmup_epochs": 0,
}


@register_peer("temi", schedules={"official": _OFFICIAL, "tuned": _TUNED}, minimums=_MINIMUMS)
def fit_temi(
    X: Tensor,
    n_clusters: int,
    *,
    neighbours: Tensor | None,
    views: Tensor | None,
    seed: int,
    n_neighbours: int | None = None,
    n_heads: int = 16,
    beta: float = 0.6,
    epochs: int = 100,
    batch_size: int = 1024,
    lr: float = 1e-4,
    min_lr: float = 1e-4,
    warmup_epochs: int = 20,
    weight_decay: float = 1e-4,
    teacher_momentum: float = 0.996,
    student_temp: float = 0.1,
    teacher_temp: float = 0.1,
    prior_momentum: float = 0.9,
    hidden_dim: int = 512,
    bottleneck_dim: int = 256,
    freeze_last_layer: int = 1,
    use_views: bool = False,
    bf16: bool = False,
) -> PeerResult:
    """TEMI on fixed features: self-distillation of ``n_heads`` clustering heads over kNN pairs.

    Each step draws a batch of samples ``x`` (the last incomplete batch is dropped) and, for each,
    one neighbour ``x'`` at random among its ``n_neighbours`` (default 50, mined by cosine with
    faiss unless ``neighbours`` is given). With ``views`` and ``use_views``, both members of a
    pair enter as a random one of their precomputed views (TEMI's image augmentations); otherwise
    as the features themselves (TEMI's default for precomputed embeddings). Student and teacher
    heads (all ``n_heads`` in batched matmuls) map both to cluster probabilities (softmax at
    ``student_temp`` / ``teacher_temp``); the student minimises :func:`temi_loss` (mean over
    heads) with AdamW under a linear warm-up from 0 (``warmup_epochs``) then cosine schedule from
    ``lr x batch/256`` to ``min_lr x batch/256``, one value per step; the teacher follows by EMA
    (``teacher_momentum``); ``q̃`` is an EMA (``prior_momentum``) of the teacher's batch-mean
    probabilities. The teacher's copy of the head with the lowest mean loss over the last epoch
    gives ``probs``.

    ``bf16=True`` runs the heads' matmuls in bfloat16 autocast (several times faster on CPUs with
    AMX or AVX-512 BF16; the authors' ``--use_fp16`` switch, off in their command), changing
    the numerics slightly; losses, optimiser and EMA stay float32.
    """
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta={beta} should be in (0, 1]")
    nbrs = resolve_neighbours(X, neighbours, n_neighbours, default=50)
    n, d = X.shape
    view = view_sampler(X, views if use_views else None, noise_std=0.0, dropout=0.0)
    student = _TemiHeads(n_heads, d, n_clusters, hidden_dim, bottleneck_dim, X.device)
    temps, momenta = (student_temp, teacher_temp), (teacher_momentum, prior_momentum)
    distil = _Distillation(student, weight_decay, beta, temps, momenta, bf16)
    bs = min(batch_size, n)
    steps = n // bs  # drop_last, as in the authors' loader
    scale = bs / 256.0
    lrs = iter(lr_schedule(lr * scale, min_lr * scale, epochs * steps, warmup_epochs * steps))
    head_losses = torch.zeros(n_heads, device=X.device)
    for epoch in range(epochs):
        head_losses.zero_()
        for idx in epoch_batches(n, bs, X.device, drop_last=True):
            nb = random_partners(nbrs, idx)
            pair = torch.cat([view(idx), view(nb)])
            head_losses += distil.step(pair, next(lrs), epoch < freeze_last_layer) / steps
        logger.debug("temi epoch %d: mean head loss %.4f", epoch, float(head_losses.mean()))

    best = select_head(head_losses)
    with torch.no_grad():
        probs = (distil.teacher(X, head=best)[0] / teacher_temp).softmax(-1)
    info = {
        "n_neighbours": int(nbrs.shape[1]),
        "n_heads": n_heads,
        "beta": beta,
        "epochs": epochs,
        "head_losses": head_losses.tolist(),
        "best_head": best,
        "used_views": use_views and views is not None,
        "bf16": bf16,
    }
    return to_result(probs, info)
