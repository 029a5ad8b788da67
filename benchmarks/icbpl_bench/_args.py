"""The ``benchmarks/bench.py`` arguments (standard library only: building the parser loads none
of the benchmark machinery)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["EXPERIMENT_HELP", "add_arguments", "default_cache_dir", "default_data_root"]

#: Shown by ``--help``; the registry (`icbpl_bench.list_experiments`) is the authority.
EXPERIMENT_HELP = (
    "table11 (ICBPL vs k-means, SCAN, TEMI, TURTLE on CIFAR-10, MNIST, Fashion-MNIST, "
    "Tiny-ImageNet), neighbours, distance, losses, encoders, refresh (ablations), plots, "
    "or all"
)


def default_data_root() -> Path:
    """``$ICBPL_DATA``, else ``../shared/data`` (relative to the working directory)."""
    return Path(os.environ.get("ICBPL_DATA") or "../shared/data").expanduser()


def default_cache_dir() -> Path:
    """``$ICBPL_CACHE/features`` (default ``~/.cache/icbpl/features``), the CLI's feature cache."""
    return Path(os.environ.get("ICBPL_CACHE") or "~/.cache/icbpl").expanduser() / "features"


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed is an integer >= 0, got {value}")
    return value


def _threads(text: str) -> int:
    value = _seed(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"--threads should be >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``benchmarks/bench.py`` arguments to ``parser`` (a sub-command's parser)."""
    parser.add_argument("experiment", metavar="EXPERIMENT", help=EXPERIMENT_HELP)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small data, 1 seed, few epochs (all of it in under 10 minutes on 2 CPU cores); "
        "writes separate files and sections named *-quick",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=_seed,
        metavar="S",
        help="seeds of every experiment (default: table11 0 1 2 3; ablations and encoders 0 1; "
        "plots the first of those; quick mode 0)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("docs/bench"),
        metavar="DIR",
        help="folder of the Markdown, CSV and PNG files (default: docs/bench)",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=Path("docs/BENCHMARKS.md"),
        metavar="FILE",
        help="Markdown file whose bench-* sections the tables also replace "
        "(default: docs/BENCHMARKS.md)",
    )
    parser.add_argument("--no-docs", action="store_true", help="do not touch the --docs file")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="feature cache shared by every experiment and run (default: $ICBPL_CACHE/features, "
        "else ~/.cache/icbpl/features)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of the benchmark data (default: $ICBPL_DATA, else ../shared/data)",
    )
    parser.add_argument(
        "--threads",
        type=_threads,
        default=1,
        metavar="N",
        help="torch (and ONNX Runtime) CPU threads (default: 1; the budgets assume 1)",
    )
    parser.add_argument(
        "--progress", action="store_true", help="show feature-extraction progress bars"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="DATASET",
        help="table11 only: run just these of its datasets (e.g. tiny-imagenet); the results go "
        "to their own files and section, table11-DATASET[-...], beside the whole table's",
    )
