"""Several independent heads evaluated in one batched call (SCAN and TEMI train many at once)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["MultiLinear", "lr_schedule", "optimizer_step", "select_head"]


class MultiLinear(nn.Module):
    """``H`` independent linear maps ``in_dim -> out_dim``: (B, in) or (H, B, in) -> (H, B, out).

    Initialised like :class:`torch.nn.Linear` (uniform in ``±1/sqrt(in_dim)``) unless ``init_std``
    is given, in which case weights are normal with that std truncated to ``[-2, 2]`` (absolute
    bounds, as DINO's ``trunc_normal_(w, std=.02)``: in effect untruncated) and biases zero (the
    DINO / TEMI head initialisation).
    """

    def __init__(
        self,
        n_heads: int,
        in_dim: int,
        out_dim: int,
        *,
        bias: bool = True,
        init_std: float | None = None,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_heads, in_dim, out_dim, device=device))
        self.bias = nn.Parameter(torch.empty(n_heads, 1, out_dim, device=device)) if bias else None
        bound = 1.0 / math.sqrt(in_dim)
        with torch.no_grad():
            if init_std is None:
                self.weight.uniform_(-bound, bound)
                if self.bias is not None:
                    self.bias.uniform_(-bound, bound)
            else:
                nn.init.trunc_normal_(self.weight, std=init_std, a=-2.0, b=2.0)
                if self.bias is not None:
                    self.bias.zero_()

    @property
    def n_heads(self) -> int:
        """Number of heads H."""
        return int(self.weight.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        """(B, in) shared by all heads, or (H, B, in) one input per head -> (H, B, out).

        One batched matmul for all heads, the bias added inside it (``baddbmm``).
        """
        if self.bias is None:
            return torch.matmul(x, self.weight)  # broadcasts (B, in) against (H, in, out)
        xb = x.expand(self.weight.shape[0], *x.shape) if x.ndim == 2 else x
        return torch.baddbmm(self.bias, xb, self.weight)

    def select(self, head: int) -> MultiLinear:
        """A one-head copy holding head ``head``'s parameters."""
        one = MultiLinear(
            1,
            self.weight.shape[1],
            self.weight.shape[2],
            bias=self.bias is not None,
            device=self.weight.device,
        )
        with torch.no_grad():
            one.weight.copy_(self.weight[head : head + 1])
            if self.bias is not None and one.bias is not None:
                one.bias.copy_(self.bias[head : head + 1])
        return one


def select_head(losses: Tensor) -> int:
    """Index of the head with the lowest loss (SCAN and TEMI keep that head)."""
    return int(torch.argmin(losses).item())


def optimizer_step(
    opt: torch.optim.Optimizer, loss: Tensor, frozen: Iterable[nn.Parameter] = ()
) -> None:
    """One step of ``opt`` on ``loss`` from zeroed gradients, ``frozen``'s gradients dropped."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    for p in frozen:
        p.grad = None
    opt.step()


def lr_schedule(base: float, final: float, total_steps: int, warmup_steps: int = 0) -> list[float]:
    """Linear warm-up from 0 to ``base`` then cosine decay to ``final`` (DINO's scheduler).

    As DINO's ``cosine_scheduler``: the warm-up is ``linspace(0, base, warmup_steps)`` (its first
    value 0, its last ``base``), then ``final + (base - final) (1 + cos(pi i / R)) / 2`` for
    ``i = 0 .. R - 1`` over the ``R`` remaining steps.
    """
    w = min(warmup_steps, total_steps)
    warm = [base * i / (w - 1) if w > 1 else 0.0 for i in range(w)]
    rest = total_steps - len(warm)
    cos = [
        final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / max(rest, 1)))
        for i in range(rest)
    ]
    return warm + cos
