"""The constraint of every `icbpl.model.estimator.ICBPL` parameter, declared once.

`PARAMETER_CONSTRAINTS` (like scikit-learn's ``_parameter_constraints``) is the single table that
both ``ICBPL.fit`` and ``ICBPL.load`` check a parameter mapping against with `validate_params`;
errors name the parameter, the value received and what is expected, e.g.
``epochs=0 should be an integer >= 1``.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["INITS", "PARAMETER_CONSTRAINTS", "Constraint", "drop_retired", "validate_params"]

INITS = ("random", "kmeans", "scan", "auto")
"""The starts of the head ``ICBPL(init=...)`` accepts."""

_DEVICE = re.compile(r"(cpu|mps|(cuda|xpu)(:[0-9]{1,3})?)")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Constraint:
    """A predicate on one value and the phrase an error uses for it ("an integer >= 1")."""

    check: Callable[[Any], bool]
    expected_text: str | Callable[[], str]

    @property
    def expected(self) -> str:
        """The phrase (computed on first use where it names options that import torch)."""
        text = self.expected_text
        return text if isinstance(text, str) else text()


def integer(low: int) -> Constraint:
    """An integer (not a bool) ``>= low``."""
    return Constraint(lambda v: _is_int(v) and v >= low, f"an integer >= {low}")


def real(low: float, *, strict: bool) -> Constraint:
    """A finite number ``> low`` (``strict``) or ``>= low``."""
    op = ">" if strict else ">="

    def check(v: Any) -> bool:
        return _is_real(v) and math.isfinite(v) and (v > low if strict else v >= low)

    return Constraint(check, f"a finite number {op} {low:g}")


def one_of(options: tuple[str, ...]) -> Constraint:
    """One of the strings ``options``."""
    return Constraint(lambda v: isinstance(v, str) and v in options, f"one of {', '.join(options)}")


def optional(inner: Constraint) -> Constraint:
    """``None`` or a value meeting ``inner``."""
    return Constraint(lambda v: v is None or inner.check(v), f"None or {inner.expected}")


def _sequence_of(item: Callable[[Any], bool], lengths: tuple[int, ...] | None) -> Any:
    def check(v: Any) -> bool:
        if isinstance(v, str | bytes) or not isinstance(v, list | tuple):
            return False
        return (lengths is None or len(v) in lengths) and all(item(x) for x in v)

    return check


def _distances() -> tuple[str, ...]:
    from icbpl.core.losses import DISTANCES  # imports torch: only when a distance is checked

    return tuple(sorted(DISTANCES))


def _distance() -> Constraint:
    """One of `icbpl.core.losses.DISTANCES`, looked up when a value is checked (so that importing
    this table, as the CLI's parser does, loads no torch)."""
    return Constraint(
        lambda v: isinstance(v, str) and v in _distances(),
        lambda: f"one of {', '.join(_distances())}",
    )


_DEVICE_TEXT = "None, 'cpu', 'cuda', 'cuda:<i>' or 'mps'"

PARAMETER_CONSTRAINTS: dict[str, Constraint] = {
    "n_clusters": integer(2),
    "latent_dim": integer(2),
    "hidden": Constraint(
        _sequence_of(lambda h: _is_int(h) and h >= 1, None),
        "a list of integers >= 1 (hidden layer widths; [] for a linear head)",
    ),
    "epochs": integer(1),
    "batch_size": integer(2),
    "lr": real(0.0, strict=True),
    "weight_decay": real(0.0, strict=False),
    "loss_weights": Constraint(
        _sequence_of(lambda w: _is_real(w) and math.isfinite(w) and w >= 0, (4,)),
        "4 numbers >= 0, finite (mmd, augmentation, neighbour, min_distance)",
    ),
    "distance": _distance(),
    "n_neighbours": integer(0),
    "refresh_every": integer(0),
    "n_heads": integer(1),
    "init": one_of(INITS),
    "init_epochs": integer(1),
    "patience": integer(0),
    "device": Constraint(
        lambda v: v is None or (isinstance(v, str) and bool(_DEVICE.fullmatch(v))), _DEVICE_TEXT
    ),
    "random_state": optional(integer(0)),
}


RETIRED = {"min_distance_warmup": 0, "feature_power": 1.0, "self_label_epochs": 0}
"""Parameters earlier versions had, with the value that made them a no-op (docs/BENCHMARKS.md)."""


def drop_retired(params: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
    """``params`` without the `RETIRED` ones, which a saved file may hold at their no-op value,
    and with a fifth ``loss_weights`` number (the retired assignment loss) dropped when it is 0;
    at any other value the file asks for what this version no longer does (ValueError)."""
    for name, neutral in RETIRED.items():
        if name in params and params[name] != neutral:
            raise ValueError(
                f"{where}: {name}={params[name]!r} is no longer supported (only {neutral!r})"
            )
    out = {k: v for k, v in params.items() if k not in RETIRED}
    weights = out.get("loss_weights")
    if isinstance(weights, list | tuple) and len(weights) == 5:
        if weights[4] != 0:
            raise ValueError(
                f"{where}: loss_weights={list(weights)!r}: a fifth number (the assignment loss "
                "weight) is no longer supported (only 0); keep the first four"
            )
        out["loss_weights"] = weights[:4]
    return out


def validate_params(
    params: Mapping[str, Any],
    *,
    where: str = "",
    complete: bool = True,
    names: Mapping[str, str] | None = None,
) -> None:
    """Raise ValueError for an unknown, missing or out-of-range parameter of ``ICBPL``.

    Args:
        params: parameter name -> value (``ICBPL.get_params()`` or a saved config's ``params``).
        where: prefix of the message (e.g. the config file the values were read from).
        complete: every parameter must be present (else only the given ones are checked).
        names: the name to show for a parameter, where the caller calls it otherwise (e.g.
            ``{"batch_size": "train_batch_size"}`` for `icbpl.pipeline.ClusterConfig`).
    """
    prefix = f"{where}: " if where else ""
    unknown = sorted(set(params) - set(PARAMETER_CONSTRAINTS))
    if unknown:
        raise ValueError(
            f"{prefix}unknown ICBPL parameter(s) {unknown}; known: {sorted(PARAMETER_CONSTRAINTS)}"
        )
    missing = sorted(set(PARAMETER_CONSTRAINTS) - set(params))
    if missing and complete:
        raise ValueError(f"{prefix}missing ICBPL parameter(s) {missing}")
    for name, constraint in PARAMETER_CONSTRAINTS.items():
        if name not in params:
            continue
        value = params[name]
        if not constraint.check(value):
            shown = (names or {}).get(name, name)
            raise ValueError(f"{prefix}{shown}={value!r} should be {constraint.expected}")
