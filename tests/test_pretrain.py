"""Tests for Barlow Twins pre-training and the CIFAR ResNet encoders.

The loss is compared with a loop-by-loop numpy transcription of eq. 1 of Zbontar et al. (2021);
the schedule and LARS with hand-computed values; pre-training end to end on 16x16 images.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from icbpl.deep.pretrain import LARS, WarmupCosine, barlow_twins_loss, pretrain_barlow_twins
from icbpl.encoders import create_encoder, list_encoders
from icbpl.encoders.cifar_resnet import (
    ARCHITECTURES,
    build_cifar_resnet,
    resnet18_cifar,
    resnet_cifar_tiny,
)


def _reference_loss(za: np.ndarray, zb: np.ndarray, lambd: float, eps: float = 1e-5) -> float:
    """Eq. 1 of the Barlow Twins paper, written out with loops."""
    n, d = za.shape

    def standardise(z: np.ndarray) -> np.ndarray:
        out = np.empty_like(z)
        for j in range(d):
            mu = sum(z[b, j] for b in range(n)) / n
            var = sum((z[b, j] - mu) ** 2 for b in range(n)) / n
            for b in range(n):
                out[b, j] = (z[b, j] - mu) / math.sqrt(var + eps)
        return out

    a, b = standardise(za), standardise(zb)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss += (1 - c_ij) ** 2 if i == j else lambd * c_ij**2
    return loss


@pytest.mark.parametrize("lambd", [5e-3, 0.5, None])
def test_loss_matches_reference(lambd: float | None) -> None:
    rng = np.random.default_rng(0)
    za = rng.standard_normal((7, 5))
    zb = za + 0.5 * rng.standard_normal((7, 5))
    got = barlow_twins_loss(torch.from_numpy(za), torch.from_numpy(zb), lambd)
    ref = _reference_loss(za, zb, 1 / 5 if lambd is None else lambd)
    assert float(got) == pytest.approx(ref, rel=1e-5)


def test_loss_hand_values() -> None:
    # two orthogonal +-1 columns: after standardisation C = I exactly (up to eps), loss = 0
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert float(barlow_twins_loss(z, z, eps=0.0)) == pytest.approx(0.0, abs=1e-6)
    # identical columns: C = all-ones, loss = lambda * (D^2 - D)
    z = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    assert float(barlow_twins_loss(z, z, lambd=0.1, eps=0.0)) == pytest.approx(0.2, abs=1e-6)
    # opposite views: C_ii = -1, on-diagonal (1 - (-1))^2 = 4 per dimension
    assert float(barlow_twins_loss(z[:, :1], -z[:, :1], eps=0.0)) == pytest.approx(4.0, abs=1e-6)


def test_loss_falls_and_gradients_are_finite() -> None:
    torch.manual_seed(0)
    net = nn.Linear(6, 4)
    x = torch.randn(32, 6)
    x2 = x + 0.5 * torch.randn_like(x)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    losses = []
    for _ in range(20):
        loss = barlow_twins_loss(net(x), net(x2))
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())  # type: ignore[arg-type]
        opt.step()
        losses.append(float(loss.detach()))
    assert all(b < a for a, b in itertools.pairwise(losses))
    assert losses[-1] < 0.7 * losses[0]


def test_loss_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="should be equal"):
        barlow_twins_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="at least 2"):
        barlow_twins_loss(torch.zeros(1, 3), torch.zeros(1, 3))


def test_warmup_cosine_values() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = WarmupCosine(opt, total_steps=12, warmup_steps=2, final_ratio=0.1)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(12):
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs[0] == pytest.approx(1.0) and lrs[1] == pytest.approx(2.0)
    assert lrs[7] == pytest.approx(0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[12] == pytest.approx(0.2)


def test_lars_step_by_hand() -> None:
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # |w| = 5
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS(
        [{"params": [w]}, {"params": [b], "lars": False, "weight_decay": 0.0}],
        lr=0.5,
        momentum=0.9,
        weight_decay=0.1,
        eta=0.02,
        clip=False,
    )
    w.grad = torch.tensor([0.0, 2.0])  # |g| = 2
    b.grad = torch.tensor([0.3])
    opt.step()
    trust = 0.02 * 5 / (2 + 0.1 * 5)
    expected = torch.tensor([3.0, 4.0]) - 0.5 * trust * (
        torch.tensor([0.0, 2.0]) + 0.1 * torch.tensor([3.0, 4.0])
    )
    torch.testing.assert_close(w.detach(), expected)
    torch.testing.assert_close(b.detach(), torch.tensor([1.0 - 0.5 * 0.3]))


# ---------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_cifar_encoders_forward(name: str) -> None:
    torch.manual_seed(0)
    enc = create_encoder(name, weights="random")
    size = enc.config.input_size
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        f = enc.encode(x)
    assert f.shape == (2, enc.config.feature_dim)
    assert torch.isfinite(f).all()
    assert len(enc.stages()) == 4
    assert enc.config.weights == "random" and not enc.config.supervised


def test_resnet18_cifar_shape() -> None:
    enc = resnet18_cifar()
    assert enc.config.feature_dim == 512
    assert sum(p.numel() for p in enc.backbone.parameters()) == 11_168_832
    assert enc.backbone.conv1.kernel_size == (3, 3) and enc.backbone.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in enc.modules())


def test_registry_has_cifar_encoders() -> None:
    assert set(ARCHITECTURES) <= set(list_encoders())
    with pytest.raises(TypeError, match="width"):
        create_encoder("resnet18_cifar", width=3)


def test_weights_from_pth_with_prefixes(tmp_path: Path) -> None:
    src = resnet_cifar_tiny()
    state = {f"module.backbone.{k}": v for k, v in src.backbone.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(3, 3)  # ignored: not part of the backbone
    torch.save(state, tmp_path / "tiny.pth")
    enc = resnet_cifar_tiny(weights=str(tmp_path / "tiny.pth"))
    assert enc.config.weights.startswith("sha256:")
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(v, enc.backbone.state_dict()[k])
    with pytest.raises(ValueError, match=r"lacks|shapes differ"):
        resnet18_cifar(weights=str(tmp_path / "tiny.pth"))


# ---------------------------------------------------------------------------- pre-training


def _images(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    base = torch.tensor([[220, 30, 30], [30, 220, 30], [30, 30, 220], [200, 200, 40]]).float()
    x = base[y][:, :, None, None] + 40 * torch.randn(n, 3, 16, 16, generator=g)
    return x.clamp(0, 255).to(torch.uint8), y.numpy()


def _pretrain(tmp: Path, **kw: object) -> object:
    torch.manual_seed(0)
    enc = resnet_cifar_tiny()
    args: dict[str, object] = {
        "epochs": 2,
        "batch_size": 16,
        "projector": (32, 32),
        "warmup_epochs": 1,
        "device": "cpu",
        "precision": "fp32",
        "out_dir": tmp,
        "seed": 3,
    }
    args.update(kw)
    return pretrain_barlow_twins(enc, _images()[0], **args)  # type: ignore[arg-type]


def test_pretrain_saves_loadable_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = resnet_cifar_tiny()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    images, _ = _images()
    res = pretrain_barlow_twins(
        enc,
        images,
        epochs=2,
        batch_size=16,
        projector=(32, 32),
        device="cpu",
        precision="fp32",
        out_dir=tmp_path,
        optimizer="adamw",
    )
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # input untouched
    assert len(res.history) == 2 and all(math.isfinite(h["loss"]) for h in res.history)
    assert res.weights_path == tmp_path / "encoder.safetensors"
    meta = json.loads((tmp_path / "encoder.json").read_text())
    assert meta["encoder"] == "resnet_cifar_tiny" and meta["pretrain"]["method"] == "barlow_twins"
    loaded = create_encoder("resnet_cifar_tiny", weights=str(res.weights_path))
    assert loaded.config.weights == res.encoder.config.weights  # type: ignore[union-attr]
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), res.encoder.encode(x))  # type: ignore[operator]
        assert not torch.equal(loaded.encode(x), enc.eval().encode(x))
    with pytest.raises(ValueError, match="resnet_cifar_tiny"):
        build_cifar_resnet("resnet18_cifar_small", weights=str(res.weights_path))


def test_pretrain_resume_after_interruption_is_exact(tmp_path: Path) -> None:
    full = _pretrain(tmp_path / "full")

    class Killed(Exception):
        pass

    def kill(epoch: int, step: int, losses: dict[str, float]) -> None:
        if (epoch, step) == (1, 1):
            raise Killed

    with pytest.raises(Killed):
        _pretrain(tmp_path / "cut", on_step=kill)
    resumed = _pretrain(tmp_path / "cut", resume=True)
    a = full.encoder.state_dict()  # type: ignore[attr-defined]
    b = resumed.encoder.state_dict()  # type: ignore[attr-defined]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="same settings"):
        _pretrain(tmp_path / "cut", resume=True, epochs=3)


def test_pretrain_validates_input() -> None:
    with pytest.raises(ValueError, match="batch_size=64"):
        pretrain_barlow_twins(
            resnet_cifar_tiny(), _images()[0], epochs=1, batch_size=64, device="cpu"
        )
    with pytest.raises(ValueError, match="out_dir"):
        pretrain_barlow_twins(
            resnet_cifar_tiny(), _images()[0], epochs=1, batch_size=8, resume=True, device="cpu"
        )
