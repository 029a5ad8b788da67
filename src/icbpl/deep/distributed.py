"""Multi-process training through ``torch.distributed`` (``torchrun``; any number of GPUs/nodes).

Launch any icbpl training script with ``torchrun --nproc_per_node=G [--nnodes ...] script.py``;
:func:`init_distributed` reads the ``env://`` variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and is a no-op in a single process.

How the ICBPL and Barlow Twins losses see the global batch: every rank draws the same global
batch (same seed), augments it identically, keeps its contiguous ``1/W`` slice, and gathers the
latents of all ranks with :func:`all_gather_with_grad`. Every rank then evaluates the same loss
over the whole global batch (MMD against the PEDCC points, cross-correlation of Barlow Twins), the
backward pass sums the gradient contributions of all ranks to each local slice, and DDP's
gradient averaging divides by ``W`` again, so the parameter gradient equals the single-process
one: ``(1/W) sum_r W dL/dz_r dz_r/dtheta = dL/dtheta``. Feature banks for neighbour mining are
extracted shard by shard (:func:`shard_range`) and assembled with :func:`gather_rows`. Only
rank 0 writes files (:attr:`DistContext.is_main`); every rank reads checkpoints when resuming, so
on several nodes the checkpoint folder must be on a shared file system.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "DistContext",
    "GlobalBatchNorm",
    "all_gather_with_grad",
    "barrier",
    "broadcast_tensor",
    "context",
    "convert_global_batchnorm",
    "destroy_distributed",
    "gather_rows",
    "init_distributed",
    "shard_range",
    "wrap_ddp",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and its rank on the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files and logs progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def context() -> DistContext:
    """The current process group's context (rank 0 of 1 when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistContext(dist.get_rank(), dist.get_world_size(), local)
    return DistContext()


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group described by the ``env://`` variables that ``torchrun`` sets.

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing is initialised and rank 0 of 1 is
    returned. ``backend`` defaults to NCCL when CUDA is available, else gloo; on CUDA the process
    is bound to ``cuda:LOCAL_RANK``.
    """
    if dist.is_available() and dist.is_initialized():
        return context()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world} but {missing} are not set; launch with torchrun (or set the "
            "env:// variables yourself)"
        )
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(
        backend=backend, init_method="env://", timeout=datetime.timedelta(seconds=timeout_s)
    )
    ctx = context()
    logger.info(
        "process %d of %d (local %d) joined via %s", ctx.rank, ctx.world_size, local, backend
    )
    return ctx


def destroy_distributed() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if context().enabled:
        dist.barrier()


def broadcast_tensor(x: Tensor, src: int = 0) -> Tensor:
    """Rank ``src``'s ``x`` on every rank (in place; returns ``x``)."""
    if context().enabled:
        dist.broadcast(x, src=src)
    return x


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums each slice's gradient over ranks.

    Every rank computes the loss on the gathered tensor, so the gradient of the global loss with
    respect to rank r's slice is spread over all ranks; the all-reduce collects it (the
    "GatherLayer" of SimCLR/Barlow Twins implementations; works on gloo, which lacks
    reduce-scatter).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.n = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        rank = dist.get_rank()
        return grad[rank * ctx.n : (rank + 1) * ctx.n]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate every rank's ``x`` (same shape on all ranks) along dim 0, keeping the gradient
    path to the local slice. Returns ``x`` unchanged in a single process."""
    if not context().enabled:
        return x
    out = _GatherWithGrad.apply(x)
    assert isinstance(out, Tensor)
    return out


def shard_range(n: int, ctx: DistContext | None = None) -> tuple[int, int]:
    """This rank's contiguous share ``[start, stop)`` of ``n`` items (sizes differ by at most 1)."""
    ctx = ctx or context()
    base, extra = divmod(n, ctx.world_size)
    start = ctx.rank * base + min(ctx.rank, extra)
    return start, start + base + (1 if ctx.rank < extra else 0)


def gather_rows(local: Tensor, ctx: DistContext | None = None) -> Tensor:
    """Concatenate the per-rank row blocks of :func:`shard_range` (sizes may differ), no gradient.

    Used for sharded feature extraction: each rank encodes ``shard_range(N)`` and every rank gets
    the full ``(N, ...)`` bank in rank order.
    """
    ctx = ctx or context()
    if not ctx.enabled:
        return local
    n = torch.tensor([local.shape[0]], device=local.device, dtype=torch.int64)
    sizes = [torch.zeros_like(n) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    biggest = max(counts)
    padded = local.new_zeros((biggest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)], dim=0)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the gradients over ranks too (every rank's loss depends
    on the global sum)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    r"""BatchNorm whose training statistics cover the batches of all ranks, on any device.

    The CPU/gloo counterpart of ``nn.SyncBatchNorm`` (which needs CUDA): per channel the ranks
    all-reduce :math:`(\sum x, \sum x^2, n)`, normalise with the global mean and biased variance
    :math:`\mu = \sum x / n, \sigma^2 = \sum x^2 / n - \mu^2` and update the running
    statistics with the unbiased variance, exactly as one process would over the global batch.
    Outside training or without a process group it is a plain BatchNorm.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, input: Tensor) -> Tensor:
        """Normalise with global batch statistics in training, running statistics otherwise."""
        if not (self.training and context().enabled):
            return super().forward(input)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        x = input.float()
        count = x.new_full((1,), x.numel() // c)
        stats = _AllReduceSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * n / (n - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        shape = [1, c] + [1] * (input.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``module`` by a :class:`GlobalBatchNorm` sharing its
    parameters and buffers (state-dict keys unchanged, like ``convert_sync_batchnorm``)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GlobalBatchNorm | nn.SyncBatchNorm
    ):
        new = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            new.weight = module.weight
            new.bias = module.bias
        new.running_mean = module.running_mean
        new.running_var = module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_global_batchnorm(child))
    return module


def wrap_ddp(module: nn.Module, device: torch.device, sync_bn: bool = True) -> nn.Module:
    """Wrap ``module`` in ``DistributedDataParallel`` when several processes run (else return it).

    With ``sync_bn``, BatchNorm layers compute their training statistics over the global batch,
    as in a single process: ``nn.SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm` elsewhere
    (CPU/gloo). The layers are replaced inside ``module`` (keys of its state dict unchanged).
    """
    ctx = context()
    if not ctx.enabled:
        return module
    if sync_bn:
        if device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        else:
            module = convert_global_batchnorm(module)
    if not any(p.requires_grad for p in module.parameters()):
        return module
    ids = None
    if device.type == "cuda":
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)
