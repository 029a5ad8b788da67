"""The ``icbpl`` command: ``demo``, ``cluster``, ``pretrain``, ``predict``, ``encoders``, ...

The command prints; the library logs (records of the ``icbpl`` loggers go to stderr, warnings
and up unless ``--verbose``, and to ``log.txt`` of a results folder). Exit status: 0 on success,
1 for a fatal error (reported in one line that says what to do; ``--verbose`` adds the
traceback), 2 for a command-line usage error, 130 when interrupted.

>>> from icbpl.cli import main
>>> main(["cluster", "photos/", "--k", "10", "--out", "results/"])   # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence

from icbpl.cli import _commands, _pretrain
from icbpl.cli._common import CliError, cli_logging, cli_wording, expected_error, one_line
from icbpl.cli._dist import quiet_rank, torchrun_group
from icbpl.cli._parser import build_parser

__all__ = ["CliError", "main"]


def _handler(command: str) -> Callable[[argparse.Namespace], int]:
    return {
        "demo": _commands.cmd_demo,
        "cluster": _commands.cmd_cluster,
        "pretrain": _pretrain.cmd_pretrain,
        "predict": _commands.cmd_predict,
        "encoders": _commands.cmd_encoders,
        "report": _commands.cmd_report,
        "cache": _commands.cmd_cache,
    }[command]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``icbpl`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as done:  # --help, --version, usage errors
        return done.code if isinstance(done.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    args.command_line = shlex.join(["icbpl", *args_list])
    quiet_rank(args)  # under torchrun only rank 0 prints
    try:
        with cli_logging(verbose=args.verbose, quiet=args.quiet), torchrun_group(args):
            return int(_handler(args.command)(args) or 0)
    except KeyboardInterrupt:
        if args.command == "pretrain":
            note = (
                " (the last finished epoch's checkpoint is kept; the same command with --resume"
                " continues)"
            )
        elif args.command == "cluster":
            note = " (the results folder keeps its previous contents"
            if not getattr(args, "no_cache", False):
                note += "; features extracted so far are cached and the same command resumes"
            note += ")"
        else:
            note = ""
        print(f"icbpl {args.command}: interrupted{note}", file=sys.stderr)
        return 130
    except Exception as err:
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        hint = "" if expected_error(err) or args.verbose else " (--verbose shows the traceback)"
        message = cli_wording(one_line(err))
        print(f"icbpl {args.command}: error: {message}{hint}", file=sys.stderr)
        return 1
