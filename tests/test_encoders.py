"""Encoder registry: names, configs, input checks, stages, and every encoder through a forward."""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch
from torch import nn

from icbpl.encoders import (
    BackboneEncoder,
    Encoder,
    EncoderConfig,
    _registry,
    create_encoder,
    list_encoders,
    register_encoder,
)

PAPER_ENCODERS = {
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "resnet50",
    "barlowtwins_resnet50",
    "simclr_resnet50",
    "mocov2_resnet50",
    "mocov3_resnet50",
    "mae_vitb16",
    "dino_vits16",
    "dino_vitb16",
    "dinov2_vits14",
    "dinov2_vitb14",
}


def _create_small(name: str) -> Encoder:
    """``name`` with random weights at the smallest input size it accepts among 32 and 28."""
    params = inspect.signature(_registry._REGISTRY[name]).parameters
    if "input_size" not in params:
        return create_encoder(name, weights="random")
    try:
        return create_encoder(name, weights="random", input_size=32)
    except ValueError:  # patch-14 ViTs need a multiple of 14
        return create_encoder(name, weights="random", input_size=28)


def test_list_encoders_has_the_paper_encoders_sorted() -> None:
    names = list_encoders()
    assert PAPER_ENCODERS <= set(names)
    assert names == sorted(names)


def test_unknown_name_lists_known_names_and_families() -> None:
    with pytest.raises(ValueError, match="unknown encoder 'resnet5'") as info:
        create_encoder("resnet5")
    assert "efficientnet_lite0" in str(info.value)
    assert "'timm:<model>'" in str(info.value)


def test_unknown_option_names_accepted_ones() -> None:
    with pytest.raises(TypeError, match="input_sise") as info:
        create_encoder("efficientnet_lite0", weights="random", input_sise=64)
    assert "input_size" in str(info.value)


def test_register_custom_encoder_and_refuse_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))

    class Mean(Encoder):
        def __init__(self) -> None:
            super().__init__()
            self.config = EncoderConfig("pixel_mean", (0, 0, 0), (1, 1, 1), 8, 3, False, "random")
            self.scale = nn.Parameter(torch.ones(()))

        def encode(self, images: torch.Tensor) -> torch.Tensor:
            return images.mean(dim=(2, 3)) * self.scale

        def stages(self) -> list[nn.Module]:
            return [self]

    @register_encoder("pixel_mean")
    def pixel_mean(weights: str | None = None) -> Mean:
        return Mean()

    assert "pixel_mean" in list_encoders()
    enc = create_encoder("pixel_mean")
    assert not enc.training
    assert enc(torch.ones(2, 3, 8, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("pixel_mean")(lambda weights=None: Mean())
    with pytest.raises(ValueError, match="non-empty string"):
        register_encoder(" spaced ")

    @register_encoder("not_an_encoder")
    def bad(weights: str | None = None) -> nn.Module:
        return nn.Identity()

    with pytest.raises(TypeError, match=r"expected an icbpl\.encoders\.Encoder"):
        create_encoder("not_an_encoder")


def test_config_validates_and_serialises() -> None:
    cfg = EncoderConfig("x", [0.5, 0.5, 0.5], (0.25, 0.25, 0.25), 32, 10, False, "random")  # type: ignore[arg-type]
    assert cfg.mean == (0.5, 0.5, 0.5)
    assert json.loads(json.dumps(cfg.to_dict()))["std"] == [0.25, 0.25, 0.25]
    with pytest.raises(AttributeError):
        cfg.name = "y"  # type: ignore[misc]
    with pytest.raises(ValueError, match="3 finite floats"):
        EncoderConfig("x", (0.5, 0.5), (1, 1, 1), 32, 10, False, "random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"std=.* > 0"):
        EncoderConfig("x", (0, 0, 0), (1, 0, 1), 32, 10, False, "random")
    with pytest.raises(ValueError, match="input_size=0"):
        EncoderConfig("x", (0, 0, 0), (1, 1, 1), 0, 10, False, "random")


@pytest.fixture(scope="module")
def lite0() -> Encoder:
    return create_encoder("efficientnet_lite0", weights="random", input_size=32)


def test_encode_rejects_wrong_inputs_with_the_fix(lite0: Encoder) -> None:
    with pytest.raises(TypeError, match=r"images.float\(\) / 255"):
        lite0.encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"32x32 pixels .* got 30x32; resize"):
        lite0.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\), got \(1, 1, 32, 32\)"):
        lite0.encode(torch.zeros(1, 1, 32, 32))


def test_encode_normalises_with_the_config(lite0: Encoder) -> None:
    assert isinstance(lite0, BackboneEncoder)
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(lite0.config.mean).view(1, 3, 1, 1)
    std = torch.tensor(lite0.config.std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(lite0.encode(x), lite0.forward_features((x - mean) / std))
        assert lite0.double().encode(x.double()).dtype == torch.float64
    lite0.float()
    assert set(lite0.state_dict()) == {k for k in lite0.state_dict() if k.startswith("backbone.")}


@pytest.mark.parametrize("name", sorted(PAPER_ENCODERS | set(list_encoders())))
def test_every_encoder_forward_shape_stages_and_gradients(name: str) -> None:
    torch.manual_seed(0)
    enc = _create_small(name)
    cfg = enc.config
    assert (cfg.name, cfg.weights, cfg.supervised) == (name, "random", False)
    assert not enc.training
    x = torch.rand(2, 3, cfg.input_size, cfg.input_size)
    out = enc.encode(x)
    assert out.shape == (2, cfg.feature_dim)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()

    stages = enc.stages()
    assert len(stages) >= 2 and all(isinstance(s, nn.Module) for s in stages)
    ids = [{id(p) for p in s.parameters()} for s in stages]
    assert all(ids[-2:]), "the two output-side stages must hold parameters"
    assert sum(map(len, ids)) == len(set().union(*ids)), "a parameter sits in two stages"
    if name in PAPER_ENCODERS:  # these cover every parameter, stem included
        assert set().union(*ids) == {id(p) for p in enc.parameters()}
    out.square().mean().backward()
    last = list(stages[-1].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in last)
    assert all(math.isfinite(float(p.grad.sum())) for p in last if p.grad is not None)


def test_stage_layouts() -> None:
    resnet = create_encoder("resnet50", weights="random", model_kwargs={"layers": (1, 1, 1, 1)})
    st = resnet.stages()
    b = resnet.backbone
    assert [st[i] for i in range(1, 5)] == [b.layer1, b.layer2, b.layer3, b.layer4]
    assert {id(p) for p in st[0].parameters()} == {
        id(b.conv1.weight),
        id(b.bn1.weight),
        id(b.bn1.bias),
    }

    vit = create_encoder("dino_vits16", weights="random", input_size=32, model_kwargs={"depth": 6})
    st = vit.stages()
    assert len(st) == 5
    first = {id(p) for p in st[0].parameters()}
    assert {id(vit.backbone.cls_token), id(vit.backbone.pos_embed)} <= first
    assert id(vit.backbone.norm.weight) in {id(p) for p in st[-1].parameters()}
    assert id(vit.backbone.blocks[5].mlp.fc2.weight) in {id(p) for p in st[-1].parameters()}

    lite = create_encoder("efficientnet_lite0", weights="random", input_size=32)
    st = lite.stages()
    assert len(st) == 1 + len(lite.backbone.blocks)
    assert id(lite.backbone.conv_head.weight) in {id(p) for p in st[-1].parameters()}
