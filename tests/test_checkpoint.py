"""Tests for checkpoints: exact round trips of optimiser/scheduler/RNG state, atomic writes, no
pickle in any written file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import icbpl.util.checkpoint as ckpt_mod
from icbpl.deep.pretrain import LARS, WarmupCosine
from icbpl.util.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def _optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-2, betas=(0.8, 0.95), weight_decay=0.1)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-2, momentum=0.9, nesterov=True)
    if name == "sgd_plain":
        return torch.optim.SGD(params, lr=1e-2, momentum=0.0)  # momentum_buffer stays None
    return LARS(params, lr=0.1, weight_decay=1e-3)


def _train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: WarmupCosine,
    gen: torch.Generator,
    steps: int,
) -> None:
    for _ in range(steps):
        x = torch.randn(8, 4, generator=gen)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


@pytest.mark.parametrize("name", ["adamw", "sgd", "sgd_plain", "lars"])
def test_round_trip_continues_identically(tmp_path: Path, name: str) -> None:
    def build() -> tuple[nn.Module, torch.optim.Optimizer, WarmupCosine, torch.Generator]:
        m = _model(0)
        o = _optimizer(name, m)
        return (
            m,
            o,
            WarmupCosine(o, total_steps=10, warmup_steps=2),
            torch.Generator().manual_seed(1),
        )

    m1, o1, s1, g1 = build()
    _train(m1, o1, s1, g1, 3)
    save_checkpoint(
        tmp_path,
        epoch=3,
        modules={"m": m1},
        optimizers={"o": o1},
        schedulers={"s": s1},
        generators={"g": g1},
        meta={"history": [1.5]},
    )
    _train(m1, o1, s1, g1, 3)

    m2, o2, s2, g2 = build()
    ck = load_checkpoint(
        tmp_path,
        modules={"m": m2},
        optimizers={"o": o2},
        schedulers={"s": s2},
        generators={"g": g2},
    )
    assert ck is not None and ck.epoch == 3 and ck.meta == {"history": [1.5]}
    _train(m2, o2, s2, g2, 3)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert s1.get_last_lr() == s2.get_last_lr()
    assert o1.state_dict()["param_groups"] == o2.state_dict()["param_groups"]


def test_global_rng_states_are_restored(tmp_path: Path) -> None:
    legacy = np.random.mtrand._rand  # numpy's global RandomState, what third-party code draws from
    torch.manual_seed(3)
    legacy.seed(4)
    random.seed(5)
    legacy.standard_normal()  # leaves a cached Gaussian in the state
    save_checkpoint(tmp_path, epoch=0)
    first = (torch.rand(3), legacy.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(99)
    legacy.seed(99)
    random.seed(99)
    load_checkpoint(tmp_path)
    again = (torch.rand(3), legacy.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_files_are_safetensors_and_json_only(tmp_path: Path) -> None:
    m = _model(0)
    o = _optimizer("adamw", m)
    _train(m, o, WarmupCosine(o, 5), torch.Generator().manual_seed(0), 1)
    save_checkpoint(
        tmp_path,
        epoch=1,
        modules={"m": m},
        optimizers={"o": o},
        tensors={"pedcc": torch.eye(3)},
        meta={"note": "x"},
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["epoch-00001.json", "epoch-00001.safetensors", "latest.json"]
    tensors = load_file(str(tmp_path / "epoch-00001.safetensors"))
    assert "optim/o/0/exp_avg" in tensors and "extra/pedcc" in tensors
    record = json.loads((tmp_path / "epoch-00001.json").read_text())
    assert record["optimizers"]["o"]["param_groups"][0]["betas"] == [0.8, 0.95]
    for path in tmp_path.iterdir():  # no pickle protocol header anywhere
        assert not path.read_bytes().startswith(b"\x80")


def test_pruning_keeps_newest(tmp_path: Path) -> None:
    for epoch in range(1, 4):
        save_checkpoint(tmp_path, epoch=epoch, keep=2)
    assert sorted(p.name for p in tmp_path.glob("epoch-*.json")) == [
        "epoch-00002.json",
        "epoch-00003.json",
    ]
    ck = load_checkpoint(tmp_path)
    assert ck is not None and ck.epoch == 3


def test_crash_while_writing_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, epoch=1, tensors={"x": torch.ones(2)})
    real = ckpt_mod._write_json

    def dying(path: Path, obj: object) -> None:
        if path.name == "latest.json":
            raise KeyboardInterrupt("killed before the pointer moved")
        real(path, obj)

    monkeypatch.setattr(ckpt_mod, "_write_json", dying)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, epoch=2, tensors={"x": torch.zeros(2)})
    monkeypatch.undo()
    (tmp_path / "epoch-00003.safetensors.tmp").write_bytes(b"torn")  # a half-written file
    ck = load_checkpoint(tmp_path)
    assert ck is not None and ck.epoch == 1
    assert torch.equal(ck.tensors["x"], torch.ones(2))


def test_missing_checkpoint_returns_none(tmp_path: Path) -> None:
    assert not has_checkpoint(tmp_path)
    assert load_checkpoint(tmp_path / "nothing") is None


def test_weights_files(tmp_path: Path) -> None:
    m = _model(0)
    path = save_weights(tmp_path / "w.safetensors", m.state_dict(), {"name": "toy"})
    state, meta = load_weights(path)
    assert meta == {"name": "toy"}
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    torch.save({"state_dict": m.state_dict()}, tmp_path / "other.pth")
    state2, meta2 = load_weights(tmp_path / "other.pth")
    assert meta2 == {} and state2.keys() == state.keys()
    with pytest.raises(ValueError, match="safetensors"):
        save_weights(tmp_path / "w.bin", m.state_dict(), {})
