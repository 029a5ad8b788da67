"""``benchmarks/bench.py``: the paper's tables (and the peers) reproduced by one command.

    python benchmarks/bench.py table11          # ICBPL vs k-means, SCAN, TEMI, TURTLE
    python benchmarks/bench.py neighbours       # ablations: neighbours, distance, losses, refresh
    python benchmarks/bench.py encoders         # EfficientNet-Lite 0/1/2, random, Barlow Twins
    python benchmarks/bench.py plots            # PNG: ACC per epoch, k sweep, latent t-SNE
    python benchmarks/bench.py all --quick      # everything on small data, under 10 minutes

Experiments are registered by name (`list_experiments`); each writes ``OUT/NAME.md`` and
``OUT/NAME.csv`` (``NAME-quick.*`` with ``--quick``), PNG files where it plots, and its table
into the ``bench-NAME`` section of docs/BENCHMARKS.md, after every finished seed (an interrupted
run leaves tables marked partial). Settings (epochs, peers' options, seeds) are in
`icbpl_bench._settings` and printed with every table.

``add_arguments`` needs only the standard library; the experiments, peers, encoders and
plotting are imported when an experiment runs.
"""

from __future__ import annotations

import argparse

from icbpl_bench._args import add_arguments

__all__ = ["add_arguments", "list_experiments", "main", "run_args"]


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the experiment, return the exit code."""
    from icbpl_bench._main import main as _main

    return _main(argv)


def run_args(args: argparse.Namespace, command: str | None = None) -> int:
    """Run from a namespace parsed by a parser that :func:`add_arguments` filled.

    ``command``: the command line as the tables state it (default ``icbpl`` + ``sys.argv[1:]``).
    The caller sets up logging (``main`` logs INFO lines to stderr).
    """
    from icbpl_bench._main import run_args as _run_args

    return _run_args(args, command)


def list_experiments() -> list[str]:
    """Names accepted as EXPERIMENT (registration order; ``all`` runs the others)."""
    from icbpl_bench import _main  # noqa: F401  (registers the experiments)
    from icbpl_bench._registry import list_experiments as _list

    return _list()
