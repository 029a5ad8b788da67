"""The subcommands: each takes the parsed arguments, prints its results and returns 0."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

from icbpl.cli._common import (
    CliError,
    EpochProgress,
    StageReporter,
    format_metrics,
    log_file,
    print_skipped,
)

__all__ = ["cmd_cache", "cmd_cluster", "cmd_demo", "cmd_encoders", "cmd_predict", "cmd_report"]

logger = logging.getLogger("icbpl.cli")


def cpu_threads(n: int | None) -> Any:
    """`icbpl.util.device.cpu_threads`, imported on use (torch; not for ``--help``)."""
    from icbpl.util.device import cpu_threads as limit

    return limit(n)


# ------------------------------------------------------------------------------ demo
def cmd_demo(args: argparse.Namespace) -> int:
    """``icbpl demo``: ICBPL and k-means on scikit-learn's digits, side by side."""
    from icbpl.pipeline.demo import run_digits_demo

    if args.epochs < 1 or args.views < 1:
        raise CliError(f"--epochs={args.epochs} and --views={args.views} should be >= 1")
    if not args.quiet:
        print("icbpl: clustering scikit-learn's 8x8 digits ...", file=sys.stderr)
    import torch

    bar = EpochProgress(args.epochs, disable=args.quiet)
    threads = torch.get_num_threads()
    # The demo's matrices are tiny (64 pixels, 100 rows a step), too small to gain from threads;
    # on a shared 2-core machine at load 10 the demo took 38 s with one thread, 490 s with two.
    torch.set_num_threads(1)
    try:
        res = run_digits_demo(seed=args.seed, epochs=args.epochs, n_views=args.views, progress=bar)
    finally:
        torch.set_num_threads(threads)
        bar.close()
    print(
        f"digits: {res.n_samples} images of 8x8 pixels, {res.n_clusters} classes "
        "(scikit-learn, bundled); features: raw pixels"
    )
    print(f"{'method':8}  {'ACC':>6}  {'NMI':>6}  {'ARI':>6}  {'time':>6}")
    for name, m in res.metrics.items():
        scores = f"{m['acc']:6.3f}  {m['nmi']:6.3f}  {m['ari']:6.3f}"
        print(f"{name:8}  {scores}  {res.seconds[name]:5.1f}s")
    print(
        f"ICBPL: {res.n_views} affine views per image, {res.epochs} epochs, seed {res.seed}; "
        f"{_selected(res.best_epoch)}. k-means: 10 restarts, same pixels."
    )
    return 0


# ---------------------------------------------------------------------------- cluster
def _absolute(value: str | None) -> str | None:
    """An absolute path for a path-like option, so a config.json can be reused elsewhere."""
    if value is None or value == "":
        return value
    return str(Path(value).expanduser().resolve())


#: ``icbpl cluster``'s options whose `icbpl.pipeline.ClusterConfig` field has another name (the
#: others pass through under their own name).
_FIELD = {"neighbours": "n_neighbours", "heads": "n_heads"}


def _cluster_config(args: argparse.Namespace) -> Any:
    from icbpl.pipeline import ClusterConfig

    weights = args.weights
    if weights not in (None, "random") and not weights.startswith(("http://", "https://")):
        weights = _absolute(weights)
    fields = {f.name for f in dataclasses.fields(ClusterConfig)}
    given = {_FIELD.get(k, k): v for k, v in vars(args).items() if _FIELD.get(k, k) in fields}
    given.update(path=_absolute(args.path), weights=weights)
    given["cache_dir"] = "" if args.no_cache else _absolute(args.cache_dir)
    given = {key: value for key, value in given.items() if value is not None}
    if args.weights is not None and Path(args.weights).expanduser().is_dir():
        given.update(_encoder_folder_options(args))
    if args.config:
        config = dataclasses.replace(ClusterConfig.from_file(args.config), **given)
    elif "path" not in given:
        raise CliError(
            "PATH is required: the folder of images to cluster (or --config FILE to repeat a run)"
        )
    elif "k" not in given:
        raise CliError("--k is required: the number of clusters, e.g. --k 10")
    else:
        config = ClusterConfig(**given)
    if args.k_range is not None and config.k != "auto":
        lo, hi = args.k_range
        raise CliError(
            f"--k-range {lo}..{hi} is only used with --k auto, got --k {config.k}; "
            "pass --k auto or leave out --k-range"
        )
    return config


def _encoder_folder_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--weights DIR`` (an `icbpl pretrain` folder): its weights file, encoder and input size."""
    from icbpl.deep.pretrain import read_encoder_folder

    folder = read_encoder_folder(args.weights)
    if args.encoder not in (None, folder.encoder):
        raise CliError(
            f"--weights {args.weights} holds a {folder.encoder} encoder, not --encoder "
            f"{args.encoder}; leave out --encoder"
        )
    options: dict[str, Any] = {"weights": str(folder.weights.resolve()), "encoder": folder.encoder}
    if args.input_size is None and folder.input_size is not None:
        options["input_size"] = folder.input_size
    return options


def _notes(encoder: dict[str, Any]) -> list[str]:
    notes = []
    if encoder.get("supervised"):
        notes.append(
            f"note: encoder {encoder.get('name')} uses weights trained with labels (supervised, "
            "e.g. ImageNet classes), so this clustering is not unsupervised end to end; "
            "self-supervised encoders are listed by `icbpl encoders`"
        )
    if encoder.get("weights") == "random":
        notes.append(
            f"note: encoder {encoder.get('name')} has random weights (no pretrained weights); "
            "pass --weights FILE for meaningful features"
        )
    return notes


def _print_cluster_run(summary: dict[str, Any], out: Path, report: Path | None) -> None:
    enc = summary["encoder"]
    settings = summary["settings"]
    epochs = summary["icbpl"]["epochs"]
    setup = f"{settings['views']} view{'' if settings['views'] == 1 else 's'}"
    heads = len(summary.get("heads") or []) or summary["icbpl"].get("n_heads", 1)
    if heads > 1:
        setup += f", best of {heads} heads"
    k = summary["n_clusters"]
    tuned = (summary.get("finetune") or {}).get("strategy")
    chosen = (
        f"encoder fine-tuned ({tuned}), the last epoch kept"
        if tuned
        else _selected(summary["best_epoch"])
    )
    print(
        f"clustered {summary['n_images']} images into {k} clusters with encoder {enc['name']} "
        f"({setup}, {epochs} epochs; {chosen})"
    )
    choice = summary.get("k_choice")
    if choice:
        print(
            f"k={k} chosen without labels: {choice['message']} "
            "(all scores under k_choice in summary.json)"
        )
    sizes = summary["cluster_sizes"]
    print("cluster sizes: " + " ".join(f"{c}:{s}" for c, s in enumerate(sizes)))
    empty = summary["empty_clusters"]
    if empty:
        print(
            f"warning: {len(empty)} of {k} clusters are empty ({', '.join(map(str, empty))}); "
            "consider a smaller --k"
        )
    if summary.get("metrics"):
        print(f"{format_metrics(summary['metrics'])}  (against the known labels)")
    timings = summary["timings"]
    print("timings: " + "  ".join(f"{name} {sec:.1f}s" for name, sec in timings.items()))
    for note in _notes(enc):
        print(note)
    written = "assignments.csv, latent.npy, summary.json, config.json, model/, log.txt"
    if tuned:
        written += ", encoder/"
    print(f"results: {out}/ ({written}{', report.html' if report else ''})")
    print_skipped(summary.get("skipped") or [])
    degraded = summary.get("degraded") or []
    if degraded:
        print(f"{len(degraded)} file(s) could not be decoded and were clustered as grey images:")
        for path, reason in degraded[:20]:
            print(f"  {path}: {reason}")


def cmd_cluster(args: argparse.Namespace) -> int:
    """``icbpl cluster``: run the pipeline and write a results folder.

    Everything, ``log.txt`` and the report included, is written into a staging folder beside
    ``--out`` that replaces it only once the run has finished (`icbpl.pipeline.ResultsFolder`):
    a failed or interrupted run leaves the previous results as they were.
    """
    from icbpl.pipeline import ResultsFolder

    config = _cluster_config(args)
    config.validate()
    out = Path(args.out) if args.out else Path(f"{Path(config.path).name or 'images'}-icbpl")
    if _other_rank(config):  # under torchrun: ranks > 0 train their share and write nothing
        from icbpl.pipeline import run_cluster

        with cpu_threads(args.threads):
            run_cluster(config, out, progress=False, command=args.command_line)  # writes nothing
        return 0
    with ResultsFolder(out, overwrite=args.overwrite) as staging:
        with cpu_threads(args.threads):
            run, report_path = _run_and_report(args, config, staging)
    _print_cluster_run(run.summary, out, out / "report.html" if report_path else None)
    return 0


def _other_rank(config: Any) -> bool:
    """True on the ranks > 0 of a torchrun launch (which only ``--finetune last2|all`` uses)."""
    from icbpl.deep.distributed import context

    ctx = context()
    if ctx.enabled and config.finetune == "frozen":
        raise CliError(
            "--finetune frozen trains the head on cached features in one process; run it "
            "without torchrun, or pass --finetune last2 or all to train under torchrun"
        )
    return not ctx.is_main


def _run_and_report(args: argparse.Namespace, config: Any, folder: Path) -> tuple[Any, Path | None]:
    from icbpl.pipeline import cluster_into, source_loader

    report_path: Path | None = None
    with log_file(folder / "log.txt", verbose=args.verbose):
        logger.info("%s", args.command_line)
        reporter = StageReporter(epochs=config.epochs, quiet=args.quiet)
        try:
            run = cluster_into(
                config,
                folder,
                progress=not args.quiet,
                on_stage=reporter,
                on_note=reporter.note,
                on_progress=reporter.fit_progress,
                command=args.command_line,
            )
        finally:
            reporter.close()
        if args.report:
            from icbpl.report import write_report

            reporter("report")
            has_files = callable(getattr(run.source, "path", None))
            loader = None if has_files else source_loader(run.source)
            report_path = write_report(
                folder, map_method=args.map, image_loader=loader, progress=not args.quiet
            )
    return run, report_path


# ---------------------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    """``icbpl predict``: assign new images with a saved run."""
    from icbpl.pipeline import predict_run

    reporter = StageReporter(epochs=0, quiet=args.quiet)
    try:
        with cpu_threads(args.threads):
            pred = predict_run(
                args.run,
                _absolute(args.path) or args.path,
                args.out,
                dataset=args.dataset,
                split=args.split,
                include_hidden=bool(args.include_hidden),
                batch_size=args.batch_size,
                device=args.device,
                precision=args.precision,
                cache_dir="" if args.no_cache else _absolute(args.cache_dir),
                progress=not args.quiet,
                on_stage=reporter,
            )
    finally:
        reporter.close()
    print(f"assigned {pred.n_images} images to the {len(pred.sizes)} clusters of {args.run}")
    print("cluster sizes: " + " ".join(f"{c}:{s}" for c, s in enumerate(pred.sizes)))
    if pred.unassigned is not None:
        print(
            f"unassigned: {int(pred.unassigned.sum())} image(s) far from every cluster (column "
            "'unassigned'; rule under 'novelty' in the run's summary.json)"
        )
    if pred.metrics:
        print(f"{format_metrics(pred.metrics)}  (against the known labels)")
    print(f"wrote {pred.out_csv}")
    print_skipped([list(s) for s in pred.skipped], where="the log")
    return 0


# ---------------------------------------------------------------------- encoders, report
def cmd_encoders(args: argparse.Namespace) -> int:
    """``icbpl encoders``: the table of registered encoders."""
    from icbpl.cli._encoders import print_encoder_folders, print_encoders

    if args.folders:
        print_encoder_folders(args.folders)
    else:
        print_encoders()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``icbpl report``: write report.html for a results folder."""
    from icbpl.pipeline import image_loader_for
    from icbpl.report import write_report

    with cpu_threads(args.threads):
        path = write_report(
            args.results,
            out=args.out,
            map_method=args.map,
            image_loader=image_loader_for(args.results),
            progress=not args.quiet,
        )
    print(f"wrote {path}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """``icbpl cache info|clear``: show or remove the feature cache."""
    from icbpl.features import cache_entries, clear_cache
    from icbpl.pipeline import cache_dir_path

    folder = cache_dir_path(_absolute(args.cache_dir))
    if folder is None:
        raise CliError("--cache-dir should name a folder")
    if args.action == "clear":
        count, freed = clear_cache(folder)
        print(f"removed {count} file(s), {freed / 2**20:.1f} MiB, from {folder}")
        return 0
    entries = cache_entries(folder)
    print(f"feature cache: {folder}")
    for e in entries:
        name = e.path.relative_to(folder)
        size = f"{e.size_bytes / 2**20:.1f} MiB"
        print(f"  {name}  {e.kind}  {e.encoder or '-'}  rows {e.rows or '-'}  {size}")
    total = sum(e.size_bytes for e in entries)
    print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {total / 2**20:.1f} MiB")
    return 0


def _selected(best_epoch: int) -> str:
    """How the kept epoch was chosen, for the closing line."""
    if best_epoch == 0:
        return "the warm start kept: no ICBPL epoch had a better label-free score"
    return f"epoch {best_epoch} selected without labels"
