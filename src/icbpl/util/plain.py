"""Dataclasses as plain JSON-ready dicts."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["plain_dict"]


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
