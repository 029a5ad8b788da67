"""The encoder interface (:class:`EncoderConfig`, :class:`Encoder`) and the name registry.

Encoders are built by name, as in timm's ``create_model``: a module registers a factory with
``@register_encoder("name")`` and users call ``create_encoder("name", weights=...)``. A name
ending in ``":*"`` registers a family (``"timm:*"``): ``create_encoder("timm:convnext_tiny")`` calls
the family's factory with ``"convnext_tiny"`` as its first argument.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import Tensor, nn

from icbpl.util.plain import plain_dict

__all__ = ["Encoder", "EncoderConfig", "create_encoder", "list_encoders", "register_encoder"]

logger = logging.getLogger(__name__)

#: ImageNet channel statistics, the normalisation of most ImageNet-trained weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FactoryT = TypeVar("FactoryT", bound=Callable[..., Any])

_REGISTRY: dict[str, Callable[..., Any]] = {}
_FAMILIES: dict[str, Callable[..., Any]] = {}


@dataclass(frozen=True)
class EncoderConfig:
    """What the data side and the feature cache need to know about an encoder.

    Attributes:
        name: registry name, e.g. ``"efficientnet_lite0"``.
        mean, std: per-channel normalisation the weights were trained with (RGB, images in [0, 1]).
        input_size: square side in pixels that :meth:`Encoder.encode` expects.
        feature_dim: ``D`` of the ``(B, D)`` output of :meth:`Encoder.encode`.
        supervised: ``True`` if the weights were trained with labels (reports must say so).
        weights: identity of the weights for cache keys: ``"sha256:<16 hex>"`` of the weight file,
            a hub id (``"timm:<model>.<tag>"``) or ``"random"``.
    """

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    feature_dim: int
    supervised: bool
    weights: str

    def __post_init__(self) -> None:
        for field_name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, field_name))
            if len(value) != 3 or not all(math.isfinite(v) for v in value):
                raise ValueError(
                    f"EncoderConfig {field_name}={getattr(self, field_name)!r} should be 3 finite "
                    "floats (one per RGB channel)"
                )
            object.__setattr__(self, field_name, value)
        if min(self.std) <= 0:
            raise ValueError(f"EncoderConfig std={self.std} should be > 0 in every channel")
        if int(self.input_size) < 1 or int(self.feature_dim) < 1:
            raise ValueError(
                f"EncoderConfig input_size={self.input_size} and feature_dim={self.feature_dim} "
                "should be positive integers"
            )
        object.__setattr__(self, "input_size", int(self.input_size))
        object.__setattr__(self, "feature_dim", int(self.feature_dim))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists for the tuples), for JSON and cache keys."""
        return plain_dict(self)


class Encoder(nn.Module):
    """Interface of every encoder: ``config``, :meth:`encode` and :meth:`stages`.

    Subclasses set ``self.config`` in their ``__init__`` (after ``super().__init__()``).
    :class:`icbpl.encoders.BackboneEncoder` implements the normalisation and input checks for
    encoders that wrap a backbone network.
    """

    config: EncoderConfig

    def encode(self, images: Tensor) -> Tensor:
        """Map images to features.

        Args:
            images: ``(B, 3, S, S)`` float in ``[0, 1]`` with ``S = config.input_size`` (the data
                side resizes); the encoder normalises them with ``config.mean``/``config.std``.

        Returns:
            ``(B, config.feature_dim)`` float features, not L2-normalised.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement encode()")

    def stages(self) -> list[nn.Module]:
        """The backbone's stages in input-to-output order (``last2`` trains ``stages()[-2:]``)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement stages()")

    def forward(self, images: Tensor) -> Tensor:
        """Same as :meth:`encode`."""
        return self.encode(images)


def register_encoder(name: str) -> Callable[[FactoryT], FactoryT]:
    """Decorator that registers ``factory(weights=None, **kwargs) -> Encoder`` under ``name``.

    Factories accept ``weights=None`` (the encoder's default weights), ``"random"`` (random
    initialisation, for tests) and a local file path. ``name`` ending in ``":*"`` registers a
    family whose factory takes the part after the colon first: ``factory(model, weights, ...)``.

    Raises:
        ValueError: if another factory already holds ``name``.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"encoder name should be a non-empty string without spaces, got {name!r}")
    family = name.endswith(":*")
    table = _FAMILIES if family else _REGISTRY
    key = name[:-2] if family else name

    def decorator(factory: FactoryT) -> FactoryT:
        old = table.get(key)
        if old is not None and _qualname(old) != _qualname(factory):
            raise ValueError(
                f"encoder name {name!r} is already registered by {_qualname(old)}; "
                f"choose another name for {_qualname(factory)}"
            )
        table[key] = factory
        return factory

    return decorator


def list_encoders() -> list[str]:
    """Sorted names of the registered encoders (families such as ``timm:*`` are not listed)."""
    return sorted(_REGISTRY)


def create_encoder(name: str, weights: str | None = None, **kwargs: Any) -> Encoder:
    """Build the encoder registered as ``name``, in eval mode.

    Args:
        name: a name from :func:`list_encoders`, or ``"<family>:<model>"`` (e.g.
            ``"timm:convnext_tiny"``).
        weights: ``None`` for the encoder's default weights (downloaded or packaged),
            ``"random"`` for random initialisation, or a path (or URL) of a checkpoint file.
        **kwargs: options of that encoder's factory (e.g. ``input_size``).

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
        TypeError: for an option the factory does not take.
    """
    factory, args = _lookup(name)
    try:
        inspect.signature(factory).bind(*args, weights=weights, **kwargs)
    except TypeError as err:
        accepted = [p for p in inspect.signature(factory).parameters if p not in ("kwargs",)]
        raise TypeError(
            f"create_encoder({name!r}) got options {sorted(kwargs)}: {err}; accepted: {accepted}"
        ) from None
    encoder = factory(*args, weights=weights, **kwargs)
    if not isinstance(encoder, Encoder):
        raise TypeError(
            f"the factory registered as {name!r} returned {type(encoder).__name__}, expected an "
            "icbpl.encoders.Encoder"
        )
    cfg = encoder.config
    logger.info(
        "encoder %s: weights=%s supervised=%s input_size=%d feature_dim=%d",
        cfg.name,
        cfg.weights,
        cfg.supervised,
        cfg.input_size,
        cfg.feature_dim,
    )
    return encoder.eval()


def _lookup(name: str) -> tuple[Callable[..., Any], tuple[str, ...]]:
    if not isinstance(name, str):
        raise TypeError(f"encoder name should be a string, got {type(name).__name__}")
    if name in _REGISTRY:
        return _REGISTRY[name], ()
    family, sep, model = name.partition(":")
    if sep and family in _FAMILIES and model:
        return _FAMILIES[family], (model,)
    families = ", ".join(f"'{f}:<model>'" for f in sorted(_FAMILIES)) or "none"
    raise ValueError(
        f"unknown encoder {name!r}; known encoders: {', '.join(list_encoders())}; "
        f"families: {families}"
    )


def _qualname(obj: Any) -> str:
    if isinstance(obj, functools.partial):
        return f"{_qualname(obj.func)}{obj.args}"
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
