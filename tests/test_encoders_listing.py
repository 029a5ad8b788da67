"""``icbpl encoders`` lists from a static table: the table agrees with the registry."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from icbpl.cli._encoders import ENCODERS, describe_encoder, hub_dir
from icbpl.encoders import cifar_resnet, create_encoder, efficientnet, list_encoders, resnet, vit


def test_table_names_the_registered_encoders() -> None:
    assert sorted(ENCODERS) == list_encoders()


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_table_row_agrees_with_the_encoder(name: str, caplog: pytest.LogCaptureFixture) -> None:
    info = ENCODERS[name]
    with caplog.at_level(logging.WARNING), torch.device("meta"):
        config = create_encoder(name, weights="random").config
    assert (info.feature_dim, info.input_size) == (config.feature_dim, config.input_size)
    if name in efficientnet.LITE_MODELS:
        spec = efficientnet.LITE_MODELS[name]
        assert (info.training, info.url) == ("supervised", None)
        assert (info.package, info.pip_name) == (spec.package, spec.pip_name)
    elif name in resnet.RESNET_MODELS:
        rspec = resnet.RESNET_MODELS[name]
        assert info.training == ("supervised" if rspec.supervised else "self-supervised")
        assert (info.url, info.package) == (rspec.url, None)
    elif name in vit.VIT_MODELS:
        assert (info.training, info.url) == ("self-supervised", vit.VIT_MODELS[name].url)
    else:
        assert name in cifar_resnet.ARCHITECTURES
        assert (info.training, info.url, info.package) == ("none (random)", None, None)


def test_hub_dir_is_torchs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert hub_dir() == Path(torch.hub.get_dir())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert hub_dir() == Path(torch.hub.get_dir()) == tmp_path / "hub"


def test_downloaded_weights_are_seen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert describe_encoder("dino_vits16").weights == "downloaded on first use (needs internet)"
    url = ENCODERS["dino_vits16"].url
    assert url is not None
    file = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    file.parent.mkdir(parents=True)
    file.write_bytes(b"")
    assert describe_encoder("dino_vits16").weights == "downloaded (cached)"
    assert describe_encoder("unknown").training == "?"
