"""The experiment registry: ``benchmarks/bench.py NAME`` runs the experiment registered as NAME."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from icbpl_bench._context import BenchContext
    from icbpl_bench._results import ResultLog

__all__ = ["Experiment", "get_experiment", "list_experiments", "register_experiment"]

logger = logging.getLogger(__name__)

RunFn = Callable[["BenchContext"], "list[ResultLog]"]
_F = TypeVar("_F", bound=RunFn)


@dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
        name: registry name (the command-line argument).
        description: one line for ``--help`` and the listing.
        run: ``run(context) -> [ResultLog, ...]``; writes its files as it goes.
        parts: for a group (``all``), the experiments it runs in order; ``run`` is then unused.
    """

    name: str
    description: str
    run: RunFn | None = None
    parts: tuple[str, ...] = ()


_EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(name: str, description: str) -> Callable[[_F], _F]:
    """Decorator registering ``run(context) -> [ResultLog, ...]`` as experiment ``name``."""

    def deco(fn: _F) -> _F:
        _add(Experiment(name, description, run=fn))
        return fn

    return deco


def register_group(name: str, description: str, parts: tuple[str, ...]) -> None:
    """Register ``name`` as running the experiments ``parts`` one after the other."""
    _add(Experiment(name, description, parts=parts))


def _add(exp: Experiment) -> None:
    if exp.name in _EXPERIMENTS:
        raise ValueError(f"an experiment named {exp.name!r} is already registered")
    _EXPERIMENTS[exp.name] = exp


def list_experiments() -> list[str]:
    """Registered experiment names, in registration order."""
    return list(_EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
    """The experiment registered as ``name`` (the error lists the known names)."""
    try:
        return _EXPERIMENTS[name]
    except KeyError:
        raise ValueError(
            f"unknown experiment {name!r}; known experiments: {', '.join(list_experiments())}"
        ) from None


def run_experiment(name: str, context: BenchContext) -> tuple[list[ResultLog], list[str]]:
    """Run experiment ``name`` (a group runs each part, going on after a part fails).

    Returns the result logs written and the names of the parts that failed.
    """
    exp = get_experiment(name)
    if exp.run is not None:
        return exp.run(context), []
    logs: list[ResultLog] = []
    failed: list[str] = []
    for part in exp.parts:
        try:
            part_logs, part_failed = run_experiment(part, context)
        except Exception:
            logger.exception("experiment %s failed; going on with the next one", part)
            failed.append(part)
            continue
        logs += part_logs
        failed += part_failed
    return logs, failed
