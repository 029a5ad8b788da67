"""Tests for end-to-end fine-tuning: which parameters and statistics each strategy moves,
neighbour refresh, exact resume after an interruption (an exception and a real SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import icbpl.deep._trainer as trainer_mod
from icbpl.core.metrics import evaluate
from icbpl.deep.finetune import FinetuneResult, finetune
from icbpl.encoders.cifar_resnet import CifarResNetEncoder, resnet_cifar_tiny


def _images(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    base = torch.tensor([[220, 30, 30], [30, 220, 30], [30, 30, 220], [200, 200, 40]]).float()
    x = base[y][:, :, None, None] + 30 * torch.randn(n, 3, 16, 16, generator=g)
    return x.clamp(0, 255).to(torch.uint8), y.numpy()


def _encoder() -> CifarResNetEncoder:
    torch.manual_seed(0)
    enc = resnet_cifar_tiny()
    for m in enc.modules():  # undo the zero-init of residual BNs so every weight gets a gradient
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
    return enc


def _run(strategy: str = "last2", **kw: object) -> FinetuneResult:
    images, labels = _images()
    args: dict[str, object] = {
        "strategy": strategy,
        "latent_dim": 8,
        "hidden": (16,),
        "epochs": 1,
        "batch_size": 16,
        "device": "cpu",
        "precision": "fp32",
        "seed": 1,
        "labels": labels,
    }
    encoder = kw.pop("encoder", None) or _encoder()
    args.update(kw)
    return finetune(encoder, images, 4, **args)  # type: ignore[arg-type]


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


@pytest.mark.parametrize("strategy", ["frozen", "last2", "all"])
def test_strategy_updates_exactly_its_parameters(strategy: str) -> None:
    enc = _encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    res = _run(strategy, encoder=enc)
    after = res.encoder.state_dict()
    assert _changed(before, enc.state_dict()) == set()  # the caller's encoder is untouched
    changed = _changed(before, after)
    trained_prefixes = {
        "frozen": (),
        "last2": ("backbone.layer3.", "backbone.layer4."),
        "all": ("backbone.",),
    }[strategy]
    should = {k for k in before if k.startswith(trained_prefixes)} if trained_prefixes else set()
    params = {n for n, _ in enc.named_parameters()}
    # every trained tensor moved (weights by the optimiser, BN statistics by the forward) ...
    assert should == changed, (sorted(should - changed)[:5], sorted(changed - should)[:5])
    # ... which includes all parameters of the trained stages and every BN buffer there
    assert bool({k for k in should if k in params}) == (strategy != "frozen")
    if strategy == "last2":
        frozen_bn = [k for k in before if k.startswith("backbone.layer2.") and "running" in k]
        assert frozen_bn and not changed & set(frozen_bn)
    assert all(p.requires_grad == (n in should) for n, p in res.encoder.named_parameters())
    head = res.head.state_dict()
    assert head["net.0.weight"].abs().sum() > 0
    assert res.labels.shape == (32,) and set(res.labels) <= set(range(4))
    assert np.allclose(np.linalg.norm(res.latent, axis=1), 1.0, atol=1e-5)


def test_training_lowers_the_objective() -> None:
    res = _run("last2", epochs=6, lr=1e-2)
    totals = [h["total"] for h in res.history if "total" in h]
    assert len(totals) == 6 and totals[-1] < 0.9 * totals[0]
    _, labels = _images()
    assert res.history[-1]["acc"] == evaluate(labels, res.labels)["acc"]


def test_neighbours_are_refreshed_every_r_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = trainer_mod.mine_neighbours

    def counting(x: object, k: int) -> np.ndarray:
        calls.append(k)
        return real(x, k)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer_mod, "mine_neighbours", counting)
    res = _run("last2", epochs=3, refresh_every=2, n_neighbours=3)
    assert calls == [3, 3]  # epochs 0 and 2
    assert res.neighbours.shape == (32, 3)
    assert not (res.neighbours == np.arange(32)[:, None]).any()


def test_neighbours_per_step_and_views() -> None:
    res = _run("frozen", epochs=1, n_neighbours=4, neighbours_per_step=4, n_views=2)
    assert np.isfinite([h["total"] for h in res.history if "total" in h]).all()


def _same(a: FinetuneResult, b: FinetuneResult) -> None:
    np.testing.assert_array_equal(a.labels, b.labels)
    for module_a, module_b in ((a.encoder, b.encoder), (a.head, b.head)):
        sa, sb = module_a.state_dict(), module_b.state_dict()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    np.testing.assert_array_equal(a.neighbours, b.neighbours)


def test_resume_after_exception_is_exact(tmp_path: Path) -> None:
    kw = {"epochs": 2, "refresh_every": 1, "optimizer": "adamw"}
    full = _run("last2", **kw)

    class Killed(Exception):
        pass

    def kill(epoch: int, step: int, losses: dict[str, float]) -> None:
        if (epoch, step) == (1, 1):
            raise Killed

    with pytest.raises(Killed):
        _run("last2", checkpoint_dir=tmp_path, on_step=kill, **kw)
    resumed = _run("last2", checkpoint_dir=tmp_path, resume=True, **kw)
    _same(full, resumed)
    assert [h.get("total") for h in full.history] == [h.get("total") for h in resumed.history]


_KILLED_RUN = """
import os, signal, sys
sys.path[:0] = [{tests!r}]
import torch
torch.set_num_threads(1)
from test_finetune import _run

def kill(epoch, step, losses):
    if (epoch, step) == (1, 0):
        os.kill(os.getpid(), signal.SIGKILL)

_run("all", epochs=2, checkpoint_dir={ckpt!r}, on_step=kill)
"""


def test_resume_after_sigkill_is_exact(tmp_path: Path) -> None:
    code = textwrap.dedent(_KILLED_RUN).format(tests=str(Path(__file__).parent), ckpt=str(tmp_path))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert (tmp_path / "latest.json").is_file()
    resumed = _run("all", epochs=2, checkpoint_dir=tmp_path, resume=True)
    _same(_run("all", epochs=2), resumed)


def test_validation_messages() -> None:
    with pytest.raises(ValueError, match="strategy='some'"):
        _run("some")
    with pytest.raises(ValueError, match="batch_size=64"):
        _run("frozen", batch_size=64)
    with pytest.raises(ValueError, match="neighbours_per_step=5"):
        _run("frozen", neighbours_per_step=5)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        _run("frozen", resume=True)


def test_result_save(tmp_path: Path) -> None:
    res = _run("frozen")
    res.save(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"encoder.safetensors", "encoder.json", "head.safetensors", "result.json"} <= names
    loaded = resnet_cifar_tiny(weights=str(tmp_path / "encoder.safetensors"))
    assert loaded.config.feature_dim == 64
