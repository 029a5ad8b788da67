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
rank 0 writes files (:attr:`DistContext.is_main`).
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
    "all_gather_with_grad",
    "barrier",
    "broadcast_tensor",
    "context",
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


def wrap_ddp(module: nn.Module, device: torch.device, sync_bn: bool = True) -> nn.Module:
    """Wrap ``module`` in ``DistributedDataParallel`` when several processes run (else return it).

    On CUDA, BatchNorm layers become ``SyncBatchNorm`` (``sync_bn``) so that their statistics cover
    the global batch, as in a single process; CPU/gloo keeps per-rank statistics (SyncBatchNorm
    needs an accelerator), which is the one place where a multi-process CPU run differs.
    """
    ctx = context()
    if not ctx.enabled:
        return module
    if sync_bn and device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if not any(p.requires_grad for p in module.parameters()):
        return module
    ids = None
    if device.type == "cuda":
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=True)
