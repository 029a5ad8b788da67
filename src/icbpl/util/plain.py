"""Dataclasses as plain JSON-ready dicts, and configurations built from a mapping."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["config_from", "plain_dict"]

T = TypeVar("T")

#: Field annotations whose values :func:`config_from` converts, and how.
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "int": int,
    "float": float,
    "tuple[int, ...]": lambda v: tuple(int(x) for x in v),
}


def _lists(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value


def plain_dict(obj: Any) -> dict[str, Any]:
    """``dataclasses.asdict(obj)`` with every tuple (nested ones too) turned into a list, as
    JSON writes and reads it back (configurations in checkpoints, summaries, cache keys)."""
    out: dict[str, Any] = _lists(dataclasses.asdict(obj))
    return out


def config_from(cls: type[T], values: Mapping[str, Any], **override: Any) -> T:
    """The dataclass ``cls`` from the entries of ``values`` (``override`` wins) that name its
    fields; fields annotated ``int``, ``float`` or ``tuple[int, ...]`` get exactly that type.

    ``config_from(Config, locals())`` at the top of a function turns its arguments into its
    configuration without copying them field by field.
    """
    given = {**values, **override}
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            convert = _CONVERT.get(str(f.type))
            kwargs[f.name] = given[f.name] if convert is None else convert(given[f.name])
    return cls(**kwargs)
