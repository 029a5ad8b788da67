"""Progress events of ``ICBPL.fit``: what a progress display (the CLI's bar) is told.

``ICBPL.fit(..., progress=callback)`` calls ``callback(FitEvent(...))`` when a phase starts
(once per head for training, once for self-labelling) and after each of its epochs. The
callback only observes: nothing it does changes the fit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from icbpl.model.training import EpochRecord

__all__ = ["FitEvent", "FitProgress", "epoch_events", "self_label_events"]


@dataclass(frozen=True)
class FitEvent:
    """One progress event of a fit.

    Attributes:
        phase: ``"training"`` (the ICBPL epochs of one head) or ``"self-labelling"``.
        kind: ``"start"`` (``epochs`` epochs follow) or ``"epoch"`` (one epoch ended).
        epochs: the phase's number of epochs (an upper bound when patience may stop early).
        loss: the epoch's mean total loss (``kind="epoch"``).
        score: the epoch's label-free score (training epochs).
    """

    phase: Literal["training", "self-labelling"]
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


def self_label_events(
    progress: FitProgress | None, epochs: int, log: logging.Logger
) -> Callable[[int, float], None]:
    """Self-labelling's epoch callback: logs each epoch on ``log`` and tells ``progress``
    (after a "start" event)."""
    tell = progress or (lambda event: None)
    tell(FitEvent("self-labelling", "start", epochs))

    def on_epoch(epoch: int, loss: float) -> None:
        log.info("self-labelling epoch %d/%d: loss %.4f", epoch, epochs, loss)
        tell(FitEvent("self-labelling", "epoch", epochs, loss=loss))

    return on_epoch
