"""Optimisers and the learning-rate schedule used by pre-training and fine-tuning.

Everything here keeps JSON-serialisable state (flags in parameter groups rather than filter
functions), so :mod:`icbpl.util.checkpoint` can save it without pickle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["LARS", "WarmupCosine", "build_optimizer", "split_decay"]

OPTIMIZERS = ("lars", "sgd", "adamw")


class LARS(torch.optim.Optimizer):
    r"""Layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017) with SGD momentum.

    For a parameter group with ``lars=True`` and a tensor ``w`` with gradient ``g``:

    .. math::

        \text{trust} = \eta \frac{\lVert w\rVert}{\lVert g\rVert + \text{wd}\,\lVert w\rVert},
        \qquad d = \text{trust}' \, (g + \text{wd}\, w), \qquad
        \mu \leftarrow m \mu + d, \qquad w \leftarrow w - \text{lr}\, \mu,

    where ``trust' = min(trust / lr, 1)`` when ``clip=True`` (the local rate never exceeds the
    global one; solo-learn's variant) and ``trust`` otherwise; ``trust = 1`` when a norm is zero.
    Groups with ``lars=False`` (biases and normalisation weights, as in Barlow Twins) take a
    plain SGD-momentum step. Barlow Twins uses ``eta=1e-3``; CIFAR recipes ``eta=0.02, clip=True``.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        clip: bool = True,
        lars: bool = True,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr={lr} should be > 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, clip=clip)
        super().__init__(params, {**defaults, "lars": lars})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One LARS step over every parameter with a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if group["lars"]:
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(d)
                    trust = group["eta"] * w_norm / (g_norm + wd * w_norm)
                    if group["clip"]:
                        trust = (trust / group["lr"]).clamp(max=1.0)
                    ok = (w_norm > 0) & (g_norm > 0)
                    trust = torch.where(ok, trust, torch.ones_like(trust))
                    d = (d + wd * p) * trust if wd else d * trust
                elif wd:
                    d = d + wd * p
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu: Tensor = state["mu"]
                mu.mul_(group["momentum"]).add_(d)
                p.add_(mu, alpha=-group["lr"])
        return loss


def split_decay(params: Iterable[tuple[str, nn.Parameter]]) -> tuple[list[Tensor], list[Tensor]]:
    """Split named parameters into (weights, biases-and-norms): tensors with ``ndim <= 1``
    (biases, BatchNorm/LayerNorm scales) get no weight decay and no LARS adaptation."""
    decay: list[Tensor] = []
    no_decay: list[Tensor] = []
    for _, p in params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return decay, no_decay


def build_optimizer(
    groups: list[tuple[Iterable[tuple[str, nn.Parameter]], float]],
    name: str,
    weight_decay: float,
    momentum: float = 0.9,
    eta: float = 0.02,
) -> torch.optim.Optimizer:
    """Build ``lars``/``sgd``/``adamw`` over ``groups`` = ``[(named_parameters, lr), ...]``.

    Each group is split by :func:`split_decay`; biases and norms get ``weight_decay=0`` (and
    ``lars=False`` for LARS). Empty groups are dropped.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r}; expected one of {OPTIMIZERS}")
    param_groups: list[dict[str, Any]] = []
    for named, lr in groups:
        decay, no_decay = split_decay(named)
        for params, wd, adapt in ((decay, weight_decay, True), (no_decay, 0.0, False)):
            if params:
                group: dict[str, Any] = {"params": params, "lr": lr, "weight_decay": wd}
                if name == "lars":
                    group["lars"] = adapt
                param_groups.append(group)
    if not param_groups:
        raise ValueError("no trainable parameters were given to the optimiser")
    lr0 = float(param_groups[0]["lr"])
    if name == "lars":
        return LARS(param_groups, lr=lr0, momentum=momentum, eta=eta)
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr0, momentum=momentum, nesterov=momentum > 0)
    return torch.optim.AdamW(param_groups, lr=lr0)


class WarmupCosine:
    r"""Per-step learning rate: linear warm-up, then cosine decay to ``final_ratio`` x base.

    .. math::

        \text{lr}(t) = \text{base} \cdot \begin{cases}
            (t + 1) / T_w & t < T_w \\
            r + (1 - r) \tfrac12 \left(1 + \cos \pi \tfrac{t - T_w}{T - T_w}\right) & t \ge T_w
        \end{cases}

    (Barlow Twins: 10 warm-up epochs, cosine to 0.001 x base.) The base rates are each parameter
    group's ``lr`` at construction; ``step()`` is called after every optimiser step. The state is
    JSON (``state_dict``/``load_state_dict``), for checkpoints.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        final_ratio: float = 1e-3,
    ) -> None:
        self.optimizer = optimizer
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps))
        self.final_ratio = float(final_ratio)
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def factor(self, t: int) -> float:
        """Multiplier of the base rate at step ``t``."""
        if t < self.warmup_steps:
            return (t + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (t - self.warmup_steps) / span)
        return self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        f = self.factor(self.last_step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * f

    def step(self) -> None:
        """Advance one optimiser step."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """Current rate of each parameter group."""
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "last_step": self.last_step,
            "base_lrs": self.base_lrs,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final_ratio": self.final_ratio,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.last_step = int(state["last_step"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self.total_steps = int(state["total_steps"])
        self.warmup_steps = int(state["warmup_steps"])
        self.final_ratio = float(state["final_ratio"])
        self._apply()
