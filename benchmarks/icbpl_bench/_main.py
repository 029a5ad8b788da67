"""Running ``benchmarks/bench.py`` from parsed arguments."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Sequence

# the experiment modules register themselves on import
from icbpl_bench import _ablations, _encoders, _plots, _table11  # noqa: F401
from icbpl_bench._args import add_arguments, default_cache_dir, default_data_root
from icbpl_bench._context import BenchContext
from icbpl_bench._docs import command_line
from icbpl_bench._registry import get_experiment, register_group, run_experiment
from icbpl_bench._settings import FULL, QUICK, BenchSettings

__all__ = ["main", "run_args"]

ALL_PARTS = ("table11", "neighbours", "distance", "losses", "refresh", "encoders", "plots")
register_group("all", "every experiment, in the order " + ", ".join(ALL_PARTS), ALL_PARTS)


def only_datasets(
    settings: BenchSettings, experiment: str, names: Sequence[str]
) -> tuple[BenchSettings, str]:
    """``settings`` with table11 cut to ``names``, and the variant name of the files.

    Raises:
        ValueError: ``experiment`` is not table11, or a name is not one of its datasets.
    """
    if experiment != "table11":
        raise ValueError(f"--only applies to table11, not {experiment!r}")
    known = [plan.dataset for plan in settings.table11]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"--only {' '.join(unknown)}: not a table11 dataset in this mode; known: "
            f"{', '.join(known)}"
        )
    plans = tuple(plan for plan in settings.table11 if plan.dataset in names)
    variant = "-".join(plan.dataset for plan in plans)
    return dataclasses.replace(settings, table11=plans), variant


def run_args(args: argparse.Namespace, command: str | None = None) -> int:
    """Run the experiment named in ``args`` (from :func:`add_arguments`); 0 on success.

    ``command`` is the command as the tables state it; default ``icbpl`` + ``sys.argv[1:]``.
    """

    try:
        get_experiment(args.experiment)
    except ValueError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    from icbpl.util.device import cpu_threads

    settings = QUICK if args.quick else FULL
    variant = ""
    if args.only:
        try:
            settings, variant = only_datasets(settings, args.experiment, args.only)
        except ValueError as err:
            print(f"bench: {err}", file=sys.stderr)
            return 2
    context = BenchContext(
        settings=settings,
        variant=variant,
        out_dir=args.out,
        docs_file=None if args.no_docs else args.docs,
        cache_dir=args.cache_dir or default_cache_dir(),
        data_root=args.data or default_data_root(),
        seeds=tuple(args.seeds) if args.seeds else None,
        command=command or " ".join(["icbpl", *sys.argv[1:]]),
        progress=args.progress,
    )
    t = time.perf_counter()
    try:
        # torch, ONNX Runtime and the BLAS / OpenMP pools (scikit-learn's k-means, t-SNE)
        with cpu_threads(args.threads):
            logs, failed = run_experiment(args.experiment, context)
    except KeyboardInterrupt:
        print(
            "bench: interrupted; the tables written so far are marked partial",
            file=sys.stderr,
        )
        return 130
    for log in logs:
        state = "complete" if log.complete else "PARTIAL"
        print(f"{log.stem}: {state}; {log.md_path}, {log.csv_path}")
    print(f"bench {args.experiment}: {time.perf_counter() - t:.0f} s")
    if failed:
        print(f"bench: failed: {', '.join(failed)} (see the log above)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/bench.py EXPERIMENT [--quick] [--seeds ...] [--out DIR] ...``."""
    parser = argparse.ArgumentParser(
        prog="benchmarks/bench.py",
        description="Reproduce the paper's tables and compare with the peers.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("icbpl.model.training", "icbpl.model.estimator", "icbpl.peers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    shown = command_line(["benchmarks/bench.py", *(sys.argv[1:] if argv is None else argv)])
    return run_args(args, shown)
