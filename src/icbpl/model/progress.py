"""Progress events of ``ICBPL.fit``: what a progress display (the CLI's bar) is told.

``ICBPL.fit(..., progress=callback)`` calls ``callback(FitEvent(...))`` when a head's training
starts and after each of its epochs. The callback only observes: nothing it does changes the
fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from icbpl.model.training import EpochRecord

__all__ = ["FitEvent", "FitProgress", "epoch_events"]


@dataclass(frozen=True)
class FitEvent:
    """One progress event of a fit.

    Attributes:
        phase: ``"training"`` (the ICBPL epochs of one head).
        kind: ``"start"`` (``epochs`` epochs follow) or ``"epoch"`` (one epoch ended).
        epochs: the phase's number of epochs (an upper bound when patience may stop early).
        loss: the epoch's mean total loss (``kind="epoch"``).
        score: the epoch's label-free score (training epochs).
    """

    phase: Literal["training"]
    kind: Literal["start", "epoch"]
    epochs: int
    loss: float | None = None
    score: float | None = None


FitProgress = Callable[[FitEvent], None]
"""What ``ICBPL.fit(progress=...)`` accepts."""


def epoch_events(progress: FitProgress | None, epochs: int) -> Callable[[EpochRecord], None] | None:
    """``train_head``'s epoch callback telling ``progress`` (after a "start" event), or None."""
    if progress is None:
        return None
    progress(FitEvent("training", "start", epochs))

    def on_epoch(record: EpochRecord) -> None:
        progress(FitEvent("training", "epoch", epochs, record.losses.get("total"), record.score))

    return on_epoch
