"""The epoch loop that Barlow Twins pre-training and fine-tuning share.

:meth:`EpochLoop.run` is the one skeleton: resuming from a checkpoint written with the same
settings, the optimiser steps with a progress hook (``on_step(epoch, step, losses)``), the
finiteness check of the epoch's mean loss, a checkpoint per epoch on rank 0, the barrier, and
the peak memory. What differs between the trainers (their batches, step, record, log line and
stopping rule) is an :class:`EpochRun`.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from icbpl.deep.distributed import barrier, context
from icbpl.util.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from icbpl.util.device import synchronize

__all__ = ["EpochLoop", "EpochRun", "StepHook", "seconds_per_epoch"]

logger = logging.getLogger(__name__)

#: Called after every optimiser step with (epoch, step in epoch, losses).
StepHook = Callable[[int, int, dict[str, float]], None]


class EpochRun:
    """What one trainer does in :meth:`EpochLoop.run`; the defaults do nothing.

    Attributes:
        name: the loss in the error about a non-finite value (``"ICBPL"``).
        advice: how to avoid one (``"lower lr"``).
        key: the loss that is minimised, an entry of :meth:`step`'s result.
        epochs: the epochs of the whole run.
        optimizer, scheduler: stepped after every batch.
    """

    name: str
    advice: str
    key: str
    epochs: int
    optimizer: torch.optim.Optimizer
    scheduler: Any

    def begin(self, tensors: dict[str, Tensor]) -> None:
        """Before the first epoch, with the checkpoint's extra tensors (``{}`` when fresh)."""

    def batches(self, epoch: int) -> Iterable[Tensor]:
        """The epoch's index batches (and any work due before them)."""
        raise NotImplementedError

    def step(self, idx: Tensor) -> dict[str, Tensor]:
        """The losses of one batch."""
        raise NotImplementedError

    def record(self, epoch: int, means: dict[str, float]) -> dict[str, float]:
        """The epoch's history entries besides ``epoch`` and ``seconds``."""
        return means

    def evaluate(self, epoch: int, record: dict[str, float]) -> None:
        """Add evaluation entries to the epoch's ``record`` (after the finiteness check)."""

    def log(self, record: dict[str, float]) -> None:
        """The epoch's log line (rank 0)."""

    def extra(self) -> dict[str, Tensor] | None:
        """Extra tensors for the epoch's checkpoint."""
        return None

    def stop(self, epoch: int) -> bool:
        """Whether to stop after ``epoch``."""
        return False


def seconds_per_epoch(history: list[dict[str, Any]]) -> float:
    """Mean ``seconds`` of the timed records, leaving out the first when there are others."""
    timed = [h["seconds"] for h in history if "seconds" in h]
    timed = timed[1:] or timed
    return sum(timed) / max(1, len(timed))


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

    def run(self, run: EpochRun, resume: bool, other: str) -> list[dict[str, Any]]:
        """Train ``run`` to ``run.epochs`` from its checkpoint (``resume``) or from epoch 0, and
        return the history; ``other`` names the option to change for a fresh run in the error
        about a checkpoint of other settings."""
        start, history, tensors = self._resume(resume, other)
        run.begin(tensors)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        for epoch in range(start, run.epochs):
            t0 = time.perf_counter()
            means = self._steps(epoch, run)
            record: dict[str, Any] = {"epoch": epoch, **run.record(epoch, means)}
            record["seconds"] = time.perf_counter() - t0
            if not math.isfinite(record[run.key]):
                raise FloatingPointError(
                    f"{run.name} loss became {record[run.key]} in epoch {epoch}; {run.advice} "
                    "or use precision='fp32'"
                )
            run.evaluate(epoch, record)
            history.append(record)
            self._end_epoch(epoch, history, functools.partial(run.log, record), run.extra())
            if run.stop(epoch):
                break
        return history

    def _resume(
        self, resume: bool, other: str
    ) -> tuple[int, list[dict[str, Any]], dict[str, Tensor]]:
        """``(first epoch, history, extra tensors)``: from the checkpoint when ``resume`` and one
        exists (restoring ``state`` in place), else ``(0, [], {})``."""
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

    def _steps(self, epoch: int, run: EpochRun) -> dict[str, float]:
        """One epoch of optimiser steps on ``run.step``'s losses (``run.key`` is minimised);
        the mean of every loss over the steps."""
        sums: dict[str, Tensor] = {}
        count = 0
        for i, idx in enumerate(run.batches(epoch)):
            losses = run.step(idx)
            run.optimizer.zero_grad(set_to_none=True)
            losses[run.key].backward()
            run.optimizer.step()
            run.scheduler.step()
            for name, value in losses.items():
                sums[name] = sums[name] + value.detach() if name in sums else value.detach()
            if self.on_step is not None:
                self.on_step(epoch, i, {k: float(v.detach()) for k, v in losses.items()})
            count += 1
        synchronize(self.device)
        return {name: float(total) / max(count, 1) for name, total in sums.items()}

    def _end_epoch(
        self,
        epoch: int,
        history: list[dict[str, Any]],
        report: Callable[[], None],
        tensors: dict[str, Tensor] | None,
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
