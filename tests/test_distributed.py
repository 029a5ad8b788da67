"""Tests for multi-process training: two CPU processes over gloo on loopback (env:// init, as
torchrun sets it up) against the same runs in one process.

Tolerance: the 2-process run evaluates the same global-batch loss, and BatchNorm layers use
global-batch statistics (``GlobalBatchNorm`` on CPU/gloo), so the runs differ only by the order
of floating-point sums: labels must be identical and latents equal to 1e-4, for a frozen encoder
and for ``last2`` (encoder stages and BatchNorm layers training). The runs use SGD: Adam turns
the float noise in the (mathematically zero) gradient of a Linear bias placed before a BatchNorm
into full-size steps, which moves the running mean and hence eval-mode latents by ~1e-2.
"""

from __future__ import annotations

import copy
import itertools
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from icbpl.deep.distributed import (
    GlobalBatchNorm,
    all_gather_with_grad,
    context,
    convert_global_batchnorm,
    destroy_distributed,
    gather_rows,
    init_distributed,
    shard_range,
)
from icbpl.deep.finetune import FinetuneResult, finetune
from icbpl.deep.pretrain import pretrain_barlow_twins
from icbpl.encoders.cifar_resnet import resnet_cifar_tiny

WORLD = 2


def _images(n: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 4
    base = torch.tensor([[220, 30, 30], [30, 220, 30], [30, 30, 220], [200, 200, 40]]).float()
    x = base[y][:, :, None, None] + 30 * torch.randn(n, 3, 16, 16, generator=g)
    return x.clamp(0, 255).to(torch.uint8)


def _finetune(strategy: str, hidden: tuple[int, ...]) -> FinetuneResult:
    torch.manual_seed(0)
    return finetune(
        resnet_cifar_tiny(),
        _images(),
        4,
        strategy=strategy,
        latent_dim=8,
        hidden=hidden,
        epochs=2,
        batch_size=16,
        optimizer="sgd",
        lr=0.05,
        encoder_lr=0.01,
        device="cpu",
        precision="fp32",
        seed=1,
    )


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        GLOO_SOCKET_IFNAME="lo",
    )
    torch.set_num_threads(1)
    ctx = init_distributed(backend="gloo")
    try:
        assert ctx == context() and ctx.world_size == WORLD and ctx.rank == rank
        # gradient through the gather: every rank evaluates the loss on the global tensor, the
        # backward sums all ranks' contributions to the local slice (DDP then averages)
        full = torch.arange(8.0).reshape(4, 2)
        weight = torch.linspace(1, 2, 8).reshape(4, 2)
        local = full[2 * rank : 2 * rank + 2].clone().requires_grad_(True)
        gathered = all_gather_with_grad(local * 1.0)
        torch.testing.assert_close(gathered, full)
        (gathered.pow(2) * weight).sum().backward()
        expected = WORLD * (2 * full * weight)[2 * rank : 2 * rank + 2]
        torch.testing.assert_close(local.grad, expected)
        # BatchNorm over the global batch: same outputs, running statistics and gradients as one
        # BatchNorm over the concatenated batch
        ref = torch.nn.BatchNorm2d(3)
        ref.weight.data.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(0))
        glob = convert_global_batchnorm(torch.nn.Sequential(copy.deepcopy(ref)))[0]
        assert isinstance(glob, GlobalBatchNorm)
        x = torch.randn(8, 3, 2, 2, generator=torch.Generator().manual_seed(1))
        w = torch.randn(8, 3, 2, 2, generator=torch.Generator().manual_seed(2))
        x_ref = x.clone().requires_grad_(True)
        y_ref = ref(x_ref)
        (y_ref * w).sum().backward()
        x_loc = x[4 * rank : 4 * rank + 4].clone().requires_grad_(True)
        y = all_gather_with_grad(glob(x_loc))
        (y * w).sum().backward()
        torch.testing.assert_close(y, y_ref.detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(x_loc.grad, WORLD * x_ref.grad[4 * rank : 4 * rank + 4])
        torch.testing.assert_close(glob.running_var, ref.running_var)
        # uneven shards reassemble in order
        start, stop = shard_range(5)
        bank = gather_rows(torch.arange(start, stop, dtype=torch.float32)[:, None])
        torch.testing.assert_close(bank[:, 0], torch.arange(5.0))
        results = {s: _finetune(s, h) for s, h in (("frozen", (16,)), ("last2", (16,)))}
        pre = pretrain_barlow_twins(
            resnet_cifar_tiny(),
            _images(),
            epochs=1,
            batch_size=16,
            projector=(32, 32),
            device="cpu",
            precision="fp32",
            out_dir=Path(out) / "bt",
            warmup_epochs=0,
        )
        assert np.isfinite(pre.history[0]["loss"])
        if ctx.is_main:
            tensors = {}
            for s, r in results.items():
                tensors[f"{s}/labels"] = torch.from_numpy(r.labels)
                tensors[f"{s}/latent"] = torch.from_numpy(r.latent)
            save_file(tensors, str(Path(out) / "ddp.safetensors"))
    finally:
        destroy_distributed()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_shard_range_covers_everything() -> None:
    from icbpl.deep.distributed import DistContext

    for n in (0, 1, 5, 32):
        for world in (1, 2, 3):
            ranges = [shard_range(n, DistContext(r, world, r)) for r in range(world)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
            sizes = [b - a for a, b in ranges]
            assert max(sizes) - min(sizes) <= 1


def test_single_process_context() -> None:
    ctx = init_distributed()
    assert ctx.world_size == 1 and ctx.is_main and not ctx.enabled
    x = torch.ones(3, requires_grad=True)
    assert all_gather_with_grad(x) is x


def test_two_processes_match_one(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    got = load_file(str(tmp_path / "ddp.safetensors"))
    assert (tmp_path / "bt" / "encoder.safetensors").is_file()  # rank 0 wrote the weights
    frozen = _finetune("frozen", (16,))
    np.testing.assert_array_equal(got["frozen/labels"].numpy(), frozen.labels)
    np.testing.assert_allclose(got["frozen/latent"].numpy(), frozen.latent, atol=1e-4)
    last2 = _finetune("last2", (16,))
    np.testing.assert_array_equal(got["last2/labels"].numpy(), last2.labels)
    np.testing.assert_allclose(got["last2/latent"].numpy(), last2.latent, atol=1e-4)


@pytest.mark.parametrize("bad", ["WORLD_SIZE"])
def test_env_without_master_is_explained(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv(bad, "2")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        init_distributed()
