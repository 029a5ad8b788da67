"""The epoch loop that Barlow Twins pre-training and fine-tuning share.

:meth:`EpochLoop.run` is the one skeleton: resuming from a checkpoint written with the same
settings, the optimiser steps with a progress hook (``on_step(epoch, step, losses)``), the
finiteness check of the epoch's mean loss, a checkpoint per epoch on rank 0, the barrier, and
the peak memory. What differs between the trainers (their batches, step, record, log line and
stopping rule) are the methods of an :class:`EpochRun`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from icbpl.deep.distributed import barrier, context
from icbpl.deep.runtime import AugmentFn, batches, new_generator
from icbpl.util.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from icbpl.util.device import synchronize

__all__ = ["EpochLoop", "EpochRun", "StepHook", "check_run", "seconds_per_epoch"]

logger = logging.getLogger(__name__)

#: Called after every optimiser step with (epoch, step in epoch, losses).
StepHook = Callable[[int, int, dict[str, float]], None]


class EpochRun:
    """What one trainer does in :meth:`EpochLoop.run`, over ``images`` (uint8, on ``dev``):
    shuffled full batches from a CPU generator seeded with ``seed``, augmentations from a
    ``dev`` generator seeded with ``seed + 1``, channels-last memory by default on CUDA.

    A trainer sets ``name`` and ``advice`` (for the error about a non-finite loss), ``key``
    (the loss :meth:`step` returns that is minimised), ``epochs``, ``optimizer`` and
    ``scheduler`` (stepped after every batch); the hooks it does not override do nothing.
    """

    name: str
    advice: str
    key: str
    epochs: int
    optimizer: torch.optim.Optimizer
    scheduler: Any

    def __init__(
        self,
        images: Tensor,
        batch_size: int,
        augment: AugmentFn,
        dev: torch.device,
        seed: int,
        channels_last: bool | None,
    ) -> None:
        self.images, self.batch_size, self.augment, self.dev = images, batch_size, augment, dev
        self.cl = dev.type == "cuda" if channels_last is None else channels_last
        self.shuffle = new_generator(torch.device("cpu"), seed)
        self.aug_gen = new_generator(dev, seed + 1)

    def state(self, **modules: torch.nn.Module) -> dict[str, Any]:
        """What a checkpoint of the run holds, with ``modules`` by name."""
        return {
            "modules": modules,
            "optimizers": {"opt": self.optimizer},
            "schedulers": {"sched": self.scheduler},
            "generators": {"shuffle": self.shuffle, "augment": self.aug_gen},
        }

    def layout(self, x: Tensor) -> Tensor:
        """``x`` in channels-last memory when the run uses it."""
        return x.contiguous(memory_format=torch.channels_last) if self.cl else x

    def begin(self, tensors: dict[str, Tensor]) -> None:
        """Before the first epoch, with the checkpoint's extra tensors (``{}`` when fresh)."""

    def batches(self, epoch: int) -> Iterator[Tensor]:
        """The epoch's index batches (after any work due before them)."""
        order = torch.randperm(self.images.shape[0], generator=self.shuffle)
        return batches(order, self.batch_size, drop_last=True)

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


def check_run(epochs: int, batch_size: int, missing: str | None) -> None:
    """Raise ValueError unless ``epochs >= 1`` and ``batch_size >= 2`` splits evenly among the
    processes; ``missing``: the option a ``resume=True`` lacks, if any."""
    world = context().world_size
    if epochs < 1 or batch_size < 2 or batch_size % world:
        raise ValueError(
            f"epochs={epochs} should be >= 1 and batch_size={batch_size} >= 2 and divisible by "
            f"the {world} processes"
        )
    if missing is not None:
        raise ValueError(f"resume=True needs {missing} (where the checkpoints are)")


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
            if context().is_main:  # the log line and the checkpoint of epoch + 1 done epochs
                run.log(record)
                if self.checkpoint_dir is not None:
                    meta = {"config": self.config, "history": history}
                    save_checkpoint(
                        self.checkpoint_dir,
                        epoch=epoch + 1,
                        tensors=run.extra(),
                        meta=meta,
                        **self.state,
                    )
            barrier()
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
