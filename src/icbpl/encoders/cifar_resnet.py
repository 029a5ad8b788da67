"""ResNets for small images (CIFAR-style): 3x3 stride-1 stem, no max-pool, global average pool.

The standard CIFAR adaptation of ResNet-18 (He et al. 2016, section 4.2; used by SimCLR,
Barlow Twins and solo-learn for 32x32 inputs): the ImageNet stem (7x7 stride-2 conv + max-pool,
which would shrink a 32x32 image to 8x8 before the first stage) is replaced by one 3x3 stride-1
convolution. Stage widths are ``w, 2w, 4w, 8w`` with ``w = 64`` for ResNet-18, so features are
512-d. Parameter names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so
checkpoints of torchvision-style CIFAR ResNets load directly.

Registered encoders (weights ``None``/``"random"`` or a local ``.safetensors``/``.pth`` file):

==================== ===== ============ ======== ==========
name                 width blocks       features input size
==================== ===== ============ ======== ==========
resnet18_cifar       64    (2, 2, 2, 2) 512      32
resnet18_cifar_small 16    (2, 2, 2, 2) 128      32
resnet_cifar_tiny    8     (1, 1, 1, 1) 64       16
==================== ===== ============ ======== ==========
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from icbpl.encoders._backbone import BackboneEncoder
from icbpl.encoders._checkpoints import file_identity
from icbpl.encoders._registry import EncoderConfig, register_encoder
from icbpl.util.checkpoint import load_weights

__all__ = ["ARCHITECTURES", "CifarResNet", "CifarResNetEncoder", "build_cifar_resnet"]

logger = logging.getLogger(__name__)

#: CIFAR-10 training-set channel statistics (the usual normalisation for CIFAR encoders).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

#: Architecture of each registered name: stage width ``w`` and blocks per stage.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "resnet18_cifar": {"width": 64, "blocks": (2, 2, 2, 2), "input_size": 32},
    "resnet18_cifar_small": {"width": 16, "blocks": (2, 2, 2, 2), "input_size": 32},
    "resnet_cifar_tiny": {"width": 8, "blocks": (1, 1, 1, 1), "input_size": 16},
}

# key prefixes of common checkpoint layouts (DDP, solo-learn, lightly, our own Encoder wrapper)
_PREFIXES = ("module.", "backbone.", "encoder.", "model.", "net.")


class CifarResNet(nn.Module):
    """ResNet with BasicBlocks and a CIFAR stem; ``forward`` returns pooled ``(B, 8w)`` features."""

    def __init__(self, blocks: Sequence[int] = (2, 2, 2, 2), width: int = 64) -> None:
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1 or width < 1:
            raise ValueError(
                f"blocks={tuple(blocks)} should be 4 positive ints, width={width} >= 1"
            )
        self.width = int(width)
        self.blocks = tuple(int(b) for b in blocks)
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self._inplanes = width
        self.layer1 = self._make_layer(width, self.blocks[0], stride=1)
        self.layer2 = self._make_layer(2 * width, self.blocks[1], stride=2)
        self.layer3 = self._make_layer(4 * width, self.blocks[2], stride=2)
        self.layer4 = self._make_layer(8 * width, self.blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 8 * width
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # zero-init of each block's last BN (Goyal et al. 2017), as in the Barlow Twins code
        for m in self.modules():
            if isinstance(m, BasicBlock) and m.bn2.weight is not None:
                nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, planes: int, n_blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers: list[nn.Module] = [BasicBlock(self._inplanes, planes, stride, downsample)]
        self._inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, n_blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map normalised images ``(B, 3, H, W)`` to pooled features ``(B, 8w)``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class CifarResNetEncoder(BackboneEncoder):
    """:class:`CifarResNet` behind the :class:`~icbpl.encoders.Encoder` interface.

    ``encode`` takes images in ``[0, 1]`` at ``config.input_size`` and normalises them with the
    CIFAR-10 mean/std; ``stages()`` returns ``layer1 .. layer4`` (the stem is not a stage, so
    ``last2`` trains ``layer3`` and ``layer4``).
    """

    backbone: CifarResNet

    def forward_features(self, x: Tensor) -> Tensor:
        """Normalised images -> pooled ``(B, 8w)`` features."""
        return self.backbone(x)

    def stages(self) -> list[nn.Module]:
        """The four residual stages, input to output."""
        b = self.backbone
        return [b.layer1, b.layer2, b.layer3, b.layer4]


def _strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    changed = True
        out[key] = value
    return out


def _load_backbone(backbone: CifarResNet, path: Path) -> None:
    state, _ = load_weights(path)
    state = _strip_prefixes(state)
    expected = set(backbone.state_dict())
    state = {k: v for k, v in state.items() if k in expected}
    missing = sorted(expected - set(state))
    if missing:
        raise ValueError(
            f"weights file {str(path)!r} lacks {len(missing)} backbone tensors (first: "
            f"{missing[:3]}); it does not hold a CIFAR ResNet of this size"
        )
    own = backbone.state_dict()
    wrong = [k for k, v in state.items() if v.shape != own[k].shape]
    if wrong:
        raise ValueError(
            f"weights file {str(path)!r}: shapes differ for {wrong[:3]} (e.g. "
            f"{tuple(state[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)}); was it saved from "
            "another width?"
        )
    backbone.load_state_dict(state, strict=True)


def build_cifar_resnet(name: str, weights: str | None = None) -> CifarResNetEncoder:
    """Build the registered CIFAR ResNet ``name`` with random or file weights.

    A JSON file beside the weights (as written by :func:`icbpl.deep.pretrain.pretrain_barlow_twins`)
    is checked against ``name``'s architecture, and a mismatch names the right encoder.
    """
    arch = ARCHITECTURES[name]
    backbone = CifarResNet(blocks=arch["blocks"], width=arch["width"])
    identity = "random"
    if weights not in (None, "random", ""):
        path = Path(str(weights)).expanduser()
        saved = _sidecar(path).get("architecture")
        if saved and (saved["width"], tuple(saved["blocks"])) != (arch["width"], arch["blocks"]):
            match = [
                n
                for n, a in ARCHITECTURES.items()
                if (a["width"], a["blocks"]) == (saved["width"], tuple(saved["blocks"]))
            ]
            raise ValueError(
                f"weights {str(path)!r} were saved from a CIFAR ResNet with width="
                f"{saved['width']} blocks={tuple(saved['blocks'])}, not {name!r}; use "
                f"create_encoder({(match or ['?'])[0]!r}, weights=...)"
            )
        _load_backbone(backbone, path)
        identity = file_identity(path)
        logger.info("%s: loaded weights %s (%s)", name, path, identity)
    config = EncoderConfig(
        name=name,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        input_size=arch["input_size"],
        feature_dim=backbone.feature_dim,
        supervised=False,
        weights=identity,
    )
    return CifarResNetEncoder(backbone, config)


def _sidecar(path: Path) -> dict[str, Any]:
    side = path.with_suffix(".json")
    if side.is_file():
        loaded = json.loads(side.read_text())
        return loaded if isinstance(loaded, dict) else {}
    return {}


def architecture_of(encoder: nn.Module) -> dict[str, Any] | None:
    """``{"width", "blocks"}`` of a :class:`CifarResNetEncoder` (``None`` for other encoders)."""
    backbone = getattr(encoder, "backbone", None)
    if isinstance(backbone, CifarResNet):
        return {"width": backbone.width, "blocks": list(backbone.blocks)}
    return None


def _registered(name: str, weights: str | None = None, **kwargs: Any) -> CifarResNetEncoder:
    """The registered factory of ``name``: random or file weights, no other options."""
    if kwargs:
        raise TypeError(f"{name} takes no options besides weights, got {sorted(kwargs)}")
    return build_cifar_resnet(name, weights)


#: The factories of the names in the module table, as `create_encoder` calls them.
resnet18_cifar, resnet18_cifar_small, resnet_cifar_tiny = (
    register_encoder(name)(functools.partial(_registered, name)) for name in ARCHITECTURES
)
