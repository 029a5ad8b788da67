"""Running a subcommand under ``torchrun``: join the process group, quiet the other ranks.

``torchrun --nproc_per_node N -m icbpl pretrain ...`` (or ``icbpl cluster ... --finetune last2``)
starts N processes with ``WORLD_SIZE=N``; each joins the group (`icbpl.deep.distributed`, NCCL on
CUDA, gloo on the CPU), trains on its share of every global batch, and only rank 0 prints and
writes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

from icbpl.cli._common import CliError

__all__ = ["DISTRIBUTED_COMMANDS", "quiet_rank", "torchrun_group", "world_size"]

#: Subcommands that run under torchrun.
DISTRIBUTED_COMMANDS = ("pretrain", "cluster")


def world_size() -> int:
    """``WORLD_SIZE`` of the environment (1 outside torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def quiet_rank(args: argparse.Namespace) -> None:
    """Make every rank but 0 quiet (one progress display, one set of messages)."""
    if world_size() > 1 and os.environ.get("RANK", "0") != "0":
        args.quiet, args.verbose = True, False


@contextlib.contextmanager
def torchrun_group(args: argparse.Namespace) -> Iterator[None]:
    """Join torchrun's process group for the command (nothing to do in one process).

    Raises:
        CliError: a command that does not run under torchrun was started by it.
    """
    if world_size() <= 1:
        yield
        return
    if args.command not in DISTRIBUTED_COMMANDS:
        raise CliError(
            f"icbpl {args.command} runs in one process; only "
            f"{' and '.join(DISTRIBUTED_COMMANDS)} run under torchrun"
        )
    from icbpl.deep.distributed import destroy_distributed, init_distributed

    init_distributed()
    try:
        yield
    finally:
        destroy_distributed()
