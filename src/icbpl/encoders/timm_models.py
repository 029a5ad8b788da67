"""Any timm model as an encoder: ``create_encoder("timm:<model>[.<tag>]", weights=...)``.

``weights=None`` loads timm's pretrained weights through timm's normal hub path (Hugging Face
hub or the model's URL; needs internet once, then the local cache); ``"random"`` initialises
randomly; a path or URL loads that checkpoint (timm layout, any nesting or prefix). Mean, std
and the default input size come from the model's pretrained config.

Whether timm's weights used labels is inferred from the tag: self-supervised tags (``dino``,
``mae``, ``lvd142m`` ...) without a fine-tuning step give ``supervised=False``, anything else
``True``; pass ``supervised=`` to override (local files default to ``True``, as their training
is unknown).
"""

from __future__ import annotations

import logging
from typing import Any

import timm
from timm.models import get_pretrained_cfg, is_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from icbpl.encoders._checkpoints import WeightsUnavailableError, load_checkpoint, resolve_weights
from icbpl.encoders._registry import IMAGENET_MEAN, IMAGENET_STD, register_encoder
from icbpl.encoders._timm import TimmEncoder, wrap_timm

__all__ = ["is_self_supervised_tag", "timm_encoder"]

logger = logging.getLogger(__name__)

_SELF_SUPERVISED_TAGS = ("dino", "mae", "lvd142m", "moco", "simclr", "barlow", "byol", "ijepa")


def is_self_supervised_tag(tag: str) -> bool:
    """``True`` for timm pretrained tags of self-supervised weights that were not fine-tuned."""
    t = tag.lower()
    return any(s in t for s in _SELF_SUPERVISED_TAGS) and "ft" not in t.replace("soft", "")


@register_encoder("timm:*")
def timm_encoder(
    model_name: str,
    weights: str | None = None,
    *,
    input_size: int | None = None,
    supervised: bool | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    prefix: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> TimmEncoder:
    """Build timm's ``model_name`` (``"convnext_tiny"``, ``"vit_small_patch16_224.dino"`` ...).

    Args:
        model_name: a timm model name, optionally with a pretrained tag.
        weights: ``None`` for timm's pretrained weights, ``"random"``, or a local file / URL.
        input_size: square input side (default: the pretrained config's); ViTs are built for it.
        supervised: override the inferred ``config.supervised`` (see the module notes).
        mean, std: override the pretrained config's normalisation.
        prefix: key prefix of the backbone in a local checkpoint.
        model_kwargs: extra arguments of ``timm.create_model``.
    """
    if not is_model(model_name):
        raise ValueError(
            f"timm has no model {model_name!r}; list candidates with "
            f"timm.list_models('*{model_name.split('.')[0][:8]}*')"
        )
    kwargs = dict(model_kwargs or {})
    cfg = get_pretrained_cfg(model_name)
    if cfg is not None and cfg.fixed_input_size and input_size and input_size != cfg.input_size[-1]:
        kwargs.setdefault("img_size", input_size)
    identity = "random"
    if weights is None:
        try:
            model = timm.create_model(model_name, pretrained=True, num_classes=0, **kwargs)
        except Exception as err:  # network errors from urllib / huggingface_hub, missing weights
            raise WeightsUnavailableError(
                f"could not get timm's pretrained weights for {model_name!r} "
                f"({type(err).__name__}: {err}). Download the weight file elsewhere and pass it: "
                f"create_encoder('timm:{model_name}', weights='/path/to/model.safetensors'), "
                "or use weights='random'"
            ) from err
        pcfg = _pretrained_cfg(model)
        identity = f"timm:{pcfg.get('hf_hub_id') or pcfg.get('architecture')}"
        if pcfg.get("tag") and not identity.endswith(f".{pcfg['tag']}"):
            identity += f".{pcfg['tag']}"
        inferred = not is_self_supervised_tag(str(pcfg.get("tag") or ""))
    else:
        model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        what = f"timm:{model_name}"
        path = resolve_weights(weights, what=what, default_url=None)
        inferred = path is not None
        if path is not None:
            convert = checkpoint_filter_fn if isinstance(model, VisionTransformer) else None
            identity = load_checkpoint(model, path, what=what, prefix=prefix, convert=convert)
    pcfg = _pretrained_cfg(model)
    if identity == "random":
        inferred, supervised = False, False
    return wrap_timm(
        model,
        f"timm:{model_name}",
        mean or tuple(pcfg.get("mean", IMAGENET_MEAN)),
        std or tuple(pcfg.get("std", IMAGENET_STD)),
        input_size or int(pcfg.get("input_size", (3, 224, 224))[-1]),
        supervised=inferred if supervised is None else supervised,
        weights=identity,
    )


def _pretrained_cfg(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "pretrained_cfg", None)
    return dict(cfg) if isinstance(cfg, dict) else {}
