"""Value parsers (argparse ``type=`` functions) and option tables of the ``icbpl`` command line."""

from __future__ import annotations

import argparse
from typing import Any, cast

__all__ = ["add_options", "number", "parse_k", "parse_k_range", "source_options"]


def parse_k(text: str) -> int | str:
    """``--k``: an integer >= 2, or ``"auto"``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected the number of clusters (an integer >= 2) or 'auto', got {text!r}"
        ) from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"the number of clusters should be >= 2, got {value}")
    return value


def parse_k_range(text: str) -> tuple[int, int]:
    """``--k-range``: ``LO..HI``, the candidates of ``--k auto`` (both ends included)."""
    lo_text, sep, hi_text = text.strip().partition("..")
    try:
        lo, hi = int(lo_text), int(hi_text)
    except ValueError:
        lo = hi = -1
    if not sep or not 2 <= lo < hi:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected LO..HI with 2 <= LO < HI, e.g. --k-range 2..50"
        )
    return lo, hi


def _k_range_text(value: object) -> str:
    lo, hi = cast(tuple[int, int], value)
    return f"{lo}..{hi}"


def number(kind: type, low: float, strict: bool = False, noun: str = "a number") -> Any:
    """A parser of ``kind`` values ``>= low`` (``> low`` when ``strict``)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(
                f"expected {noun} {'>' if strict else '>='} {low}, got {value}"
            )
        return value

    return parse


_positive = number(int, 0, noun="an integer")


def _loss_weights(text: str) -> tuple[float, ...]:
    parts = text.split(",")
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 0:
        raise argparse.ArgumentTypeError(
            "expected four numbers >= 0 separated by commas "
            f"(MMD,augmentation,kNN,min-distance), e.g. 8,2,2,1; got {text!r}"
        )
    return values


def _at_least_one(text: str) -> int:
    value = _positive(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def add_options(p: argparse._ActionsContainer, table: dict[tuple[Any, ...], str]) -> None:
    """Add an option per ``(flag, kind, metavar[, default]): help`` entry of ``table``, in order.

    ``flag`` is one name or a tuple of names; ``kind`` is the value parser (``None`` keeps the
    text), a tuple of choices, or ``bool`` for a switch (``store_true``, no metavar).
    """
    for (flag, kind, metavar, *default), text in table.items():
        kwargs: dict[str, Any] = {"help": text, **({"default": default[0]} if default else {})}
        if kind is bool:
            kwargs["action"] = "store_true"
        elif isinstance(kind, tuple):
            kwargs.update(choices=kind, metavar=metavar)
        else:
            kwargs.update(type=kind, metavar=metavar)
        p.add_argument(*((flag,) if isinstance(flag, str) else flag), **kwargs)


def source_options(p: argparse.ArgumentParser) -> None:
    """--dataset, --split and --include-hidden: how PATH is read."""
    add_options(
        p,
        {
            ("--dataset", None, "NAME"): "read PATH as this dataset's root (cifar10, cifar100, "
            "stl10, mnist, ...)",
            ("--split", None, "S"): "dataset split (train, test, all), or a sub-folder of PATH",
            ("--include-hidden", bool, None, None): "also read files and folders whose names "
            "start with '.' (skipped by default)",
        },
    )
