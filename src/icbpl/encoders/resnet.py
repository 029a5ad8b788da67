"""ResNet-50 encoders (torchvision layout): supervised, Barlow Twins, SimCLR, MoCo v2, MoCo v3.

Every checkpoint is read into torchvision's ``resnet50`` (``conv1``, ``layer1.0.conv1`` ...,
``fc`` replaced by an identity, so features are the 2048-d global average pool). The weight
files and their layouts:

==================== ============================================= ============================
name                 default weights (downloaded once)             layout
==================== ============================================= ============================
resnet50             torchvision IMAGENET1K_V2 (SUPERVISED)        plain state dict
barlowtwins_resnet50 ``facebookresearch/barlowtwins:main`` resnet50 plain state dict, no ``fc``
simclr_resnet50      none: pass a file (see below)                 ``state_dict``, any prefix
mocov2_resnet50      MoCo v2, 800 epochs                           ``module.encoder_q.``
mocov3_resnet50      MoCo v3, 1000 epochs                          ``module.base_encoder.``
==================== ============================================= ============================

The default URLs are the files torch.hub's ``hubconf.py`` of each project downloads; fetching
them directly runs no repository code. Prefixes are found automatically (the one under which
most keys fit the model); heads (``fc``, projector, predictor) and momentum/key encoders are
dropped. Any torchvision-layout ResNet-50 checkpoint loads with ``create_encoder("resnet50",
weights="/path/ckpt.pth")``; say ``supervised=False`` if it was trained without labels.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torchvision.models import ResNet50_Weights
from torchvision.models.resnet import Bottleneck, ResNet

from icbpl.encoders._backbone import BackboneEncoder, arrange_stages
from icbpl.encoders._checkpoints import load_checkpoint, resolve_weights
from icbpl.encoders._registry import IMAGENET_MEAN, IMAGENET_STD, EncoderConfig, register_encoder

__all__ = ["RESNET_MODELS", "ResNetEncoder", "resnet50_encoder"]

logger = logging.getLogger(__name__)

_SIMCLR_HINT = (
    "The official SimCLR weights are TensorFlow checkpoints: convert the ResNet-50 (1x) with "
    "https://github.com/tonylins/simclr-converter (it writes {'state_dict': ...} for inputs in "
    "[0, 1] without normalisation, this encoder's default), or pass a PyTorch SimCLR checkpoint "
    "(solo-learn, lightly; 'backbone.' keys), adding mean=(0.485, 0.456, 0.406), "
    "std=(0.229, 0.224, 0.225) since those were trained on ImageNet-normalised inputs."
)


@dataclass(frozen=True)
class _ResNetSpec:
    url: str | None
    supervised: bool
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    prefixes: tuple[str, ...] = ()
    hint: str = ""


RESNET_MODELS: dict[str, _ResNetSpec] = {
    "resnet50": _ResNetSpec(url=ResNet50_Weights.IMAGENET1K_V2.url, supervised=True),
    "barlowtwins_resnet50": _ResNetSpec(
        url="https://dl.fbaipublicfiles.com/barlowtwins/ep1000_bs2048_lrw0.2_lrb0.0048_lambd0.0051/resnet50.pth",
        supervised=False,
    ),
    "simclr_resnet50": _ResNetSpec(
        url=None,
        supervised=False,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        prefixes=("backbone.", "encoder.", "module.encoder.", "model.backbone."),
        hint=_SIMCLR_HINT,
    ),
    "mocov2_resnet50": _ResNetSpec(
        url="https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar",
        supervised=False,
        prefixes=("module.encoder_q.",),
    ),
    "mocov3_resnet50": _ResNetSpec(
        url="https://dl.fbaipublicfiles.com/moco-v3/r-50-1000ep/r-50-1000ep.pth.tar",
        supervised=False,
        prefixes=("module.base_encoder.",),
    ),
}


class ResNetEncoder(BackboneEncoder):
    """A torchvision ResNet (``fc`` = identity) as an encoder: 2048-d pooled features."""

    def forward_features(self, x: Tensor) -> Tensor:
        """Normalised images -> ``(B, 2048)`` global-average-pooled features."""
        return self.backbone(x)

    def stages(self) -> list[nn.Module]:
        """``[stem (conv1, bn1), layer1, layer2, layer3, layer4]``."""
        names = [f"layer{i}" for i in range(1, 5)]
        return arrange_stages(self.backbone, names, [getattr(self.backbone, n) for n in names])


def build_resnet(layers: Sequence[int] = (3, 4, 6, 3), **kwargs: Any) -> ResNet:
    """torchvision's bottleneck ResNet (``layers=(3, 4, 6, 3)`` is ResNet-50), ``fc`` = identity.

    Smaller ``layers``/``width_per_group`` keep the key names of ResNet-50 (used by the tests).
    """
    model = ResNet(Bottleneck, list(layers), **kwargs)
    model.fc = nn.Identity()
    return model


def resnet50_encoder(
    name: str,
    weights: str | None = None,
    *,
    input_size: int = 224,
    supervised: bool | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    prefix: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> ResNetEncoder:
    """Build the ResNet-50 encoder ``name`` (a key of :data:`RESNET_MODELS`).

    Args:
        name: which weights and layout (see the module table).
        weights: ``None`` for the default download, ``"random"``, a local file or a URL.
        input_size: square input side (any works for a ResNet; 224 as trained).
        supervised: override ``config.supervised`` (``resnet50``: ``True`` unless told; the
            self-supervised names: ``False``; random weights: always ``False``).
        mean, std: override the normalisation the weights were trained with.
        prefix: key prefix of the backbone in the checkpoint, when the automatic choice fails.
        model_kwargs: arguments of :func:`build_resnet` (``layers``, ``width_per_group``,
            ``zero_init_residual`` ...).
    """
    spec = RESNET_MODELS[name]
    model = build_resnet(**(model_kwargs or {}))
    path = resolve_weights(weights, what=name, default_url=spec.url, hint=spec.hint)
    identity = "random"
    if path is not None:
        identity = load_checkpoint(model, path, what=name, prefix=prefix, preferred=spec.prefixes)
        logger.info("%s: loaded %s (%s)", name, path, identity)
    config = EncoderConfig(
        name=name,
        mean=mean or spec.mean,
        std=std or spec.std,
        input_size=input_size,
        feature_dim=model.layer4[-1].conv3.out_channels,
        supervised=_supervised(path is not None, spec.supervised, supervised),
        weights=identity,
    )
    return ResNetEncoder(model, config)


def _supervised(loaded: bool, default: bool, override: bool | None) -> bool:
    """Random weights never used labels; otherwise the caller's word, else the default."""
    if not loaded:
        return False
    return default if override is None else override


for _name in RESNET_MODELS:
    register_encoder(_name)(functools.partial(resnet50_encoder, _name))
