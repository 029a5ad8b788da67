"""The epoch loop that Barlow Twins pre-training and fine-tuning share.

Both trainers keep their own step (what one batch computes); :class:`EpochLoop` does the rest
the same way for both: resuming from a checkpoint written with the same settings, the optimiser
steps with a progress hook (``on_step(epoch, step, losses)``), the finiteness check of the
epoch's mean loss, a checkpoint per epoch on rank 0, the barrier, and the peak memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from icbpl.deep.distributed import barrier, context
from icbpl.util.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from icbpl.util.device import synchronize

__all__ = ["EpochLoop", "StepHook"]

logger = logging.getLogger(__name__)

#: Called after every optimiser step with (epoch, step in epoch, losses).
StepHook = Callable[[int, int, dict[str, float]], None]


@dataclass
class EpochLoop:
    """One training run's loop state.

    Attributes:
        state: what a checkpoint holds (``modules``, ``optimizers``, ``schedulers``,
            ``generators``, as :func:`icbpl.util.checkpoint.save_checkpoint` takes them).
        config: the run's settings; a checkpoint written with others is refused on resume.
        checkpoint_dir: where a checkpoint is written after every epoch (``None``: nowhere).
        device: the training device (synchronised after each epoch's steps).
        on_step: the progress hook, or ``None``.
    """

    state: dict[str, Any]
    config: dict[str, Any]
    checkpoint_dir: Path | None
    device: torch.device
    on_step: StepHook | None = None

    def resume(
        self, resume: bool, other: str
    ) -> tuple[int, list[dict[str, Any]], dict[str, Tensor]]:
        """``(first epoch, history, extra tensors)``: from the checkpoint when ``resume`` and one
        exists (restoring ``state`` in place), else ``(0, [], {})``. ``other`` names the option
        to change for a fresh run in the error about a checkpoint of other settings."""
        folder = self.checkpoint_dir
        if not (resume and folder is not None and has_checkpoint(folder)):
            return 0, [], {}
        ck = load_checkpoint(folder, **self.state)
        assert ck is not None
        if ck.meta.get("config") != self.config:
            raise ValueError(
                f"checkpoint in {folder} was written with {ck.meta.get('config')}, not "
                f"{self.config}; resume with the same settings or {other}"
            )
        return ck.epoch, list(ck.meta["history"]), ck.tensors

    def steps(
        self,
        epoch: int,
        batches: Iterable[Tensor],
        step: Callable[[Tensor], dict[str, Tensor]],
        key: str,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
    ) -> dict[str, float]:
        """One epoch of optimiser steps on ``step(batch)``'s losses (``key`` is minimised); the
        mean of every loss over the steps."""
        sums: dict[str, Tensor] = {}
        count = 0
        for i, idx in enumerate(batches):
            losses = step(idx)
            optimizer.zero_grad(set_to_none=True)
            losses[key].backward()
            optimizer.step()
            scheduler.step()
            for name, value in losses.items():
                sums[name] = sums[name] + value.detach() if name in sums else value.detach()
            if self.on_step is not None:
                self.on_step(epoch, i, {k: float(v.detach()) for k, v in losses.items()})
            count += 1
        synchronize(self.device)
        return {name: float(total) / max(count, 1) for name, total in sums.items()}

    @staticmethod
    def check_finite(value: float, message: str) -> None:
        """Raise FloatingPointError with ``message`` (formatted with the value) for NaN or inf."""
        if not math.isfinite(value):
            raise FloatingPointError(message.format(value))

    def end_epoch(
        self,
        epoch: int,
        history: list[dict[str, Any]],
        report: Callable[[], None],
        tensors: dict[str, Tensor] | None = None,
    ) -> None:
        """After ``history`` got the epoch's record: on rank 0 ``report()`` (its log line) and the
        checkpoint of ``epoch + 1`` completed epochs; then every rank waits at the barrier."""
        if context().is_main:
            report()
            if self.checkpoint_dir is not None:
                save_checkpoint(
                    self.checkpoint_dir,
                    epoch=epoch + 1,
                    tensors=tensors,
                    meta={"config": self.config, "history": history},
                    **self.state,
                )
        barrier()

    def start(self) -> None:
        """Reset the peak memory statistics (CUDA) before the first epoch."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
