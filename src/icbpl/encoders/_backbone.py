"""An :class:`Encoder` around a backbone network, and helpers to group a backbone into stages."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from icbpl.encoders._registry import Encoder, EncoderConfig

__all__ = ["BackboneEncoder", "arrange_stages", "check_images", "split_evenly"]


class BackboneEncoder(Encoder):
    """Normalises ``[0, 1]`` images with ``config.mean``/``config.std`` and runs ``backbone``.

    Subclasses implement :meth:`forward_features` (normalised images -> ``(B, D)``) and
    :meth:`stages`. ``mean``/``std`` are non-persistent buffers, so they follow ``.to(device)``
    and stay out of ``state_dict()`` (which holds ``backbone.*`` only).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, backbone: nn.Module, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def encode(self, images: Tensor) -> Tensor:
        """``(B, 3, S, S)`` float images in ``[0, 1]``, ``S = config.input_size`` -> ``(B, D)``.

        The features are the backbone's pooled output (no L2 normalisation). Gradients flow when
        enabled, so the same method serves feature extraction and fine-tuning.
        """
        check_images(images, self.config)
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        return self.forward_features(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """Normalised images -> ``(B, D)`` features."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward_features()")


def check_images(images: Tensor, config: EncoderConfig) -> None:
    """Raise a helpful error unless ``images`` is a float ``(B, 3, S, S)`` batch at input size."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{config.name}.encode expects a torch.Tensor, got {type(images).__name__}")
    size = config.input_size
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"{config.name}.encode expects images of shape (B, 3, {size}, {size}), got "
            f"{tuple(images.shape)}; grey images need expanding to 3 channels first"
        )
    if not images.is_floating_point():
        raise TypeError(
            f"{config.name}.encode expects float images in [0, 1], got dtype {images.dtype}; "
            "convert uint8 images with images.float() / 255"
        )
    if images.shape[-2:] != (size, size):
        raise ValueError(
            f"{config.name}.encode expects images of {size}x{size} pixels (config.input_size), "
            f"got {images.shape[-2]}x{images.shape[-1]}; resize them first (the data side "
            "resizes), or create the encoder with input_size=... where it takes that option"
        )


class _OwnParameters(nn.Module):
    """Holds a module's direct parameters (e.g. a ViT's ``cls_token``) so a stage can own them."""

    def __init__(self, params: Sequence[tuple[str, nn.Parameter]]) -> None:
        super().__init__()
        for name, param in params:
            self.register_parameter(name, param)


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _group(modules: Sequence[nn.Module]) -> nn.Module:
    return modules[0] if len(modules) == 1 else nn.ModuleList(modules)


def arrange_stages(
    model: nn.Module, body_children: Sequence[str], body: Sequence[nn.Module]
) -> list[nn.Module]:
    """Stages covering every parameter of ``model``: stem, the ``body`` stages, output side.

    The stem gathers the model's own parameters (a ViT's tokens and position embedding) and its
    children before the first of ``body_children`` (the direct children that hold ``body``);
    children after the last of them (final norm, head convolution) join the last stage, so that
    training ``stages()[-2:]`` trains everything on the output side. Groups of several modules
    are :class:`torch.nn.ModuleList`: parameter groups, not callables.
    """
    if not body:
        raise ValueError(f"{type(model).__name__}: no body stages found in {list(body_children)}")
    children = list(model.named_children())
    names = [n for n, _ in children]
    missing = [n for n in body_children if n not in names]
    if missing:
        raise ValueError(f"{type(model).__name__} has no children {missing}; children: {names}")
    first = min(names.index(n) for n in body_children)
    last = max(names.index(n) for n in body_children)
    lead = [m for _, m in children[:first] if _has_params(m)]
    trail = [m for _, m in children[last + 1 :] if _has_params(m)]
    own = list(model.named_parameters(recurse=False))
    stem: list[nn.Module] = ([_OwnParameters(own)] if own else []) + lead
    stages = ([_group(stem)] if stem else []) + list(body[:-1])
    stages.append(_group([body[-1], *trail]))
    return stages


def split_evenly(blocks: Sequence[nn.Module], groups: int) -> list[nn.Module]:
    """Split ``blocks`` (e.g. transformer blocks) into ``min(groups, len)`` consecutive groups."""
    n = len(blocks)
    k = max(1, min(groups, n))
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [_group(list(blocks[bounds[i] : bounds[i + 1]])) for i in range(k)]
