"""An encoder around any timm model: pooled pre-logits features and stages found by structure."""

from __future__ import annotations

from torch import Tensor, nn

from icbpl.encoders._backbone import BackboneEncoder, arrange_stages, split_evenly
from icbpl.encoders._registry import EncoderConfig

__all__ = ["TimmEncoder", "timm_feature_dim", "timm_stages", "wrap_timm"]

#: Transformer blocks are grouped into this many stages (like a ResNet's four).
VIT_STAGE_GROUPS = 4


class TimmEncoder(BackboneEncoder):
    """A timm model as an encoder: features are ``forward_head(..., pre_logits=True)``.

    That is the pooled representation the classifier would see: global average pooling for
    convolutional networks, the class token after the final norm for ViTs (``global_pool``
    decides). A classifier kept on the model (``num_classes > 0``) is not applied by
    :meth:`encode`; it stays reachable as ``encoder.backbone.get_classifier()``.
    """

    def forward_features(self, x: Tensor) -> Tensor:
        """Normalised images -> pooled ``(B, D)`` features."""
        model = self.backbone
        return model.forward_head(model.forward_features(x), pre_logits=True)  # type: ignore[operator]

    def stages(self) -> list[nn.Module]:
        """Stem, body stages and output side of the timm model (see :func:`timm_stages`)."""
        return timm_stages(self.backbone)


def wrap_timm(
    model: nn.Module,
    name: str,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    input_size: int,
    *,
    supervised: bool,
    weights: str,
) -> TimmEncoder:
    """``model`` as the encoder ``name``, its feature dimension read from it."""
    dim = timm_feature_dim(model)
    return TimmEncoder(model, EncoderConfig(name, mean, std, input_size, dim, supervised, weights))


def timm_feature_dim(model: nn.Module) -> int:
    """Width of a timm model's pre-logits features."""
    dim = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    if not isinstance(dim, int):
        raise ValueError(f"{type(model).__name__} does not report num_features")
    return dim


def timm_stages(model: nn.Module) -> list[nn.Module]:
    """Stages of a timm model in input-to-output order, together covering all its parameters.

    * ``blocks`` of ``nn.Sequential`` stages (EfficientNet, MobileNet): one stage per element.
    * ``blocks`` of transformer blocks (ViT, DeiT, EVA): :data:`VIT_STAGE_GROUPS` equal groups.
    * ``stages`` or ``layers`` containers (ConvNeXt, Swin, RegNet ...): one stage per element.
    * ``layer1`` .. ``layer4`` (ResNet): one stage each.
    * otherwise every child that has parameters.

    Stem parameters form the first stage and the output side (final norm, head convolution)
    joins the last (:func:`icbpl.encoders._backbone.arrange_stages`).
    """
    children = dict(model.named_children())
    blocks = children.get("blocks")
    if isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks) > 0:
        items = list(blocks)
        if all(isinstance(b, nn.Sequential) for b in items):
            return arrange_stages(model, ["blocks"], items)
        return arrange_stages(model, ["blocks"], split_evenly(items, VIT_STAGE_GROUPS))
    for name in ("stages", "layers"):
        container = children.get(name)
        if isinstance(container, nn.Sequential | nn.ModuleList) and len(container) > 1:
            return arrange_stages(model, [name], list(container))
    layers = [f"layer{i}" for i in range(1, 5)]
    if all(n in children for n in layers):
        return arrange_stages(model, layers, [children[n] for n in layers])
    return [m for m in children.values() if any(True for _ in m.parameters())]
