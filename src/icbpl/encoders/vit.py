"""Self-supervised Vision Transformers: MAE ViT-B/16, DINO ViT-S/16 and ViT-B/16, DINOv2 ViT-S/14
and ViT-B/14, built as timm ``VisionTransformer`` models.

==============  ============================  =====================================================
name            timm architecture             default weights (downloaded once)
==============  ============================  =====================================================
mae_vitb16      ``vit_base_patch16_224``      MAE ``mae_pretrain_vit_base.pth`` (``model``)
dino_vits16     ``vit_small_patch16_224``     ``facebookresearch/dino:main`` ``dino_vits16``
dino_vitb16     ``vit_base_patch16_224``      ``facebookresearch/dino:main`` ``dino_vitb16``
dinov2_vits14   ``vit_small_patch14_dinov2``  ``facebookresearch/dinov2`` ``dinov2_vits14``
dinov2_vitb14   ``vit_base_patch14_dinov2``   ``facebookresearch/dinov2`` ``dinov2_vitb14``
==============  ============================  =====================================================

The URLs are the files the projects' torch.hub ``hubconf.py`` download (no repository code
runs). Checkpoints in the original layouts load: plain state dicts (DINO, DINOv2), ``model``
(MAE, decoder and ``mask_token`` dropped), ``teacher`` with ``backbone.`` keys (full DINO
checkpoints), plus any prefix. Position embeddings are resampled to ``input_size`` by timm's
``checkpoint_filter_fn`` (DINOv2's are stored for 518 px). Features are the class token after
the final norm (``D`` = 384 for S, 768 for B); all weights are self-supervised (no labels).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import timm
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from icbpl.encoders._checkpoints import load_checkpoint, resolve_weights
from icbpl.encoders._registry import IMAGENET_MEAN, IMAGENET_STD, register_encoder
from icbpl.encoders._timm import TimmEncoder, wrap_timm

__all__ = ["VIT_MODELS", "vit_encoder"]

logger = logging.getLogger(__name__)

_FB = "https://dl.fbaipublicfiles.com"


@dataclass(frozen=True)
class _ViTSpec:
    timm_name: str
    url: str
    patch: int


VIT_MODELS: dict[str, _ViTSpec] = {
    "mae_vitb16": _ViTSpec(
        "vit_base_patch16_224", f"{_FB}/mae/pretrain/mae_pretrain_vit_base.pth", 16
    ),
    "dino_vits16": _ViTSpec(
        "vit_small_patch16_224",
        f"{_FB}/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth",
        16,
    ),
    "dino_vitb16": _ViTSpec(
        "vit_base_patch16_224",
        f"{_FB}/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
        16,
    ),
    "dinov2_vits14": _ViTSpec(
        "vit_small_patch14_dinov2", f"{_FB}/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth", 14
    ),
    "dinov2_vitb14": _ViTSpec(
        "vit_base_patch14_dinov2", f"{_FB}/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth", 14
    ),
}


def vit_encoder(
    name: str,
    weights: str | None = None,
    *,
    input_size: int = 224,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    prefix: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> TimmEncoder:
    """Build the self-supervised ViT ``name`` (a key of :data:`VIT_MODELS`).

    Args:
        name: which model and weights (see the module table).
        weights: ``None`` for the default download, ``"random"``, a local file or a URL.
        input_size: square input side, a multiple of the patch size (224 as trained).
        mean, std: normalisation (ImageNet statistics, as all five were trained).
        prefix: key prefix of the backbone in the checkpoint, when the automatic choice fails.
        model_kwargs: extra arguments of ``timm.create_model`` (e.g. ``drop_path_rate``; the
            tests shrink ``embed_dim``/``depth``/``num_heads``).
    """
    spec = VIT_MODELS[name]
    kwargs = dict(model_kwargs or {})
    patch = int(kwargs.get("patch_size", spec.patch))
    if input_size < patch or input_size % patch:
        raise ValueError(
            f"{name}: input_size={input_size} should be a positive multiple of the patch size "
            f"{patch} (e.g. {max(1, round(input_size / patch)) * patch})"
        )
    kwargs.setdefault("img_size", input_size)
    path = resolve_weights(weights, what=name, default_url=spec.url)
    if path is not None:  # every tensor is loaded (load_into checks), so skip the slow init
        kwargs.setdefault("weight_init", "skip")
    model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **kwargs)
    if not isinstance(model, VisionTransformer):  # model_kwargs cannot change the class
        raise TypeError(f"{spec.timm_name} built a {type(model).__name__}, not a VisionTransformer")
    identity = "random"
    if path is not None:
        identity = load_checkpoint(
            model, path, what=name, prefix=prefix, convert=checkpoint_filter_fn
        )
        logger.info("%s: loaded %s (%s)", name, path, identity)
    return wrap_timm(model, name, mean, std, input_size, supervised=False, weights=identity)


for _name in VIT_MODELS:
    register_encoder(_name)(functools.partial(vit_encoder, _name))
