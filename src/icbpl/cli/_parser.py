"""The argument parser of ``icbpl`` (built without importing torch, so ``--help`` is quick)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import cast

from icbpl.cli._pretrain import pretrain_options
from icbpl.cli._types import (
    _at_least_one,
    _k_range_text,
    _loss_weights,
    _positive,
    add_options,
    parse_k,
    parse_k_range,
    source_options,
)

__all__ = ["DEFAULTS", "build_parser", "parse_k", "parse_k_range"]


def _cluster_defaults() -> dict[str, object]:
    from icbpl.pipeline import ClusterConfig

    return {
        f.name: f.default
        for f in dataclasses.fields(ClusterConfig)
        if f.default is not dataclasses.MISSING
    }


#: Default of every `icbpl.pipeline.ClusterConfig` field (shown in the help).
DEFAULTS = _cluster_defaults()


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    add_options(
        parent.add_mutually_exclusive_group(),
        {
            (("-q", "--quiet"), bool, None): "no progress bars or stage lines on stderr",
            (("-v", "--verbose"), bool, None): "log details on stderr and show tracebacks of "
            "errors",
        },
    )
    return parent


def _extraction_options(p: argparse.ArgumentParser, *, from_run: bool) -> None:
    def default(name: str) -> str:
        return " (default: the run's)" if from_run else f" (default: {DEFAULTS[name]})"

    add_options(
        p,
        {
            ("--threads", _at_least_one, "N"): "CPU threads of torch, ONNX Runtime and "
            "scikit-learn for every stage (default: torch's, usually one per core, and one thread "
            "for training the head at batches of up to 512); 1 avoids large slow-downs when other "
            "jobs share the cores",
            ("--batch-size", _positive, "B"): "images per encoder forward pass"
            + default("batch_size"),
            ("--device", None, "DEV"): "auto, cpu, cuda[:i] or mps" + default("device"),
            ("--precision", ("auto", "fp32", "bf16"), None): "numeric precision of the encoder"
            + default("precision"),
        },
    )
    cache = p.add_mutually_exclusive_group()
    add_options(
        cache,
        {
            ("--cache-dir", None, "DIR"): "feature cache folder (default: "
            + ("the run's" if from_run else "$ICBPL_CACHE/features or ~/.cache/icbpl/features")
            + ")",
            ("--no-cache", bool, None): "keep features in memory, write no cache",
        },
    )


def _cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", metavar="PATH", help="folder of images, or a dataset root")
    add_options(
        p,
        {
            ("--k", parse_k, "K"): "number of clusters: an integer >= 2, or 'auto' to choose it "
            "without labels (see --k-range)",
            ("--k-range", parse_k_range, "LO..HI"): "candidates of --k auto, both ends included, "
            f"capped below the number of images (default: {_k_range_text(DEFAULTS['k_range'])})",
            ("--out", None, "DIR"): "results folder to write (default: ./<PATH name>-icbpl)",
            ("--overwrite", bool, None): "replace the results of an earlier run in --out (only "
            "the files it wrote; a folder icbpl did not write is always refused)",
            ("--config", None, "FILE"): "repeat a run: the config.json of an earlier results "
            "folder (options given here override its values)",
        },
    )
    source_options(p)
    _cluster_encoder_options(p)
    _cluster_head_options(p)


def _cluster_encoder_options(p: argparse.ArgumentParser) -> None:
    """``icbpl cluster``'s encoder, views and extraction options."""
    d = DEFAULTS
    add_options(
        p,
        {
            ("--encoder", None, "NAME"): f"encoder (default: {d['encoder']})",
            ("--weights", None, "FILE|DIR"): "encoder checkpoint file, an encoder folder of "
            "`icbpl pretrain` (its encoder and input size are used), or 'random' (default: the "
            "encoder's default weights)",
            ("--input-size", _positive, "PX"): "encoder input side in pixels",
            ("--views", _positive, "V"): f"augmented views per image (default: {d['views']})",
            ("--epochs", _positive, "E"): "training epochs of the ICBPL head (default: auto, "
            "enough for about 2,000 training steps, between 20 and 60)",
        },
    )
    _extraction_options(p, from_run=False)
    add_options(p, {("--seed", _positive, "S"): f"random seed (default: {d['seed']})"})


def _cluster_head_options(p: argparse.ArgumentParser) -> None:
    """``icbpl cluster``'s options of the ICBPL head: its start and training, the losses,
    fine-tuning and the report."""
    d = DEFAULTS
    weights = ",".join(f"{w:g}" for w in cast(tuple[float, ...], d["loss_weights"]))
    add_options(
        p,
        {
            ("--latent-dim", _positive, "D"): "latent dimension of the head "
            f"(default: {d['latent_dim']})",
            ("--neighbours", _positive, "N"): "nearest neighbours per image for the neighbour "
            f"loss (default: {d['n_neighbours']})",
            (
                "--init",
                ("auto", "kmeans", "scan", "random"),
                None,
            ): "start of the head: auto (default, beyond the paper: one "
            "head from each of the kmeans and scan starts, the higher label-free score kept), "
            "kmeans (k-means on neighbour-smoothed features, which ICBPL then refines), scan "
            "(SCAN's clustering step), or random (the paper's method); see docs/BENCHMARKS.md; "
            "fine-tuning always starts at random",
            ("--heads", _at_least_one, "H"): "train H heads from different seeds and keep the one "
            "with the best label-free score (beyond the paper; H times the training; default: 1)",
            ("--patience", _positive, "E"): "stop training once the label-free score has not "
            "improved for E epochs (default: 10; 0 runs every epoch)",
            ("--loss-weights", _loss_weights, "M,A,N,D"): "weights of the MMD, augmentation, "
            f"kNN and min-distance losses (default: {weights})",
            ("--finetune", ("frozen", "last2", "all"), None): "what of the encoder is trained: "
            "frozen (default; the head on cached features), last2 (its last two stages and the "
            "head, the paper's fine-tuning) or all (every layer); last2/all compute features on "
            "the fly, so they cost an encoder pass per image, view and neighbour each epoch (a "
            "GPU, or torchrun, for large folders)",
            ("--encoder-lr", float, "LR"): "learning rate of the fine-tuned encoder parts "
            f"(default: {d['encoder_lr']:g})",
            ("--train-batch-size", _at_least_one, "B"): "images per training step of the head "
            f"(default: {d['train_batch_size']})",
            ("--report", bool, None): "also write report.html",
            ("--map", ("tsne", "pca"), None, "tsne"): "2-D map of the report (default: tsne)",
        },
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``icbpl`` parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="icbpl",
        description="Cluster unlabelled images with ICBPL (arXiv 2408.01920).",
        epilog="Start with `icbpl demo`; then `icbpl cluster photos/ --k 10 --out results/`.",
    )
    from icbpl import __version__

    parser.add_argument("--version", action="version", version=f"icbpl {__version__}")
    common = _common()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (summary, description, add_arguments) in _COMMANDS.items():
        add_arguments(sub.add_parser(name, parents=[common], help=summary, description=description))
    return parser


def _demo_options(p: argparse.ArgumentParser) -> None:
    add_options(
        p,
        {
            ("--seed", _positive, None, 0): "random seed (default: 0)",
            ("--epochs", _positive, None, 60): "ICBPL training epochs (default: 60)",
            ("--views", _positive, None, 4): "affine views per image (default: 4)",
        },
    )


def _predict_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="MODEL_DIR", help="results folder of `icbpl cluster`")
    p.add_argument("path", metavar="PATH", help="folder of images, or a dataset root")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="CSV file to write")
    source_options(p)
    _extraction_options(p, from_run=True)


def _encoders_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("folders", nargs="*", metavar="ENCODER_DIR", help="encoder folders to describe")


def _report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", metavar="RESULTS_DIR", help="results folder")
    add_options(
        p,
        {
            ("--map", ("tsne", "pca"), None, "tsne"): "2-D map (default: tsne)",
            ("--out", None, "FILE"): "HTML file (default: RESULTS_DIR/report.html)",
            ("--threads", _at_least_one, "N"): "CPU threads of the map (t-SNE) and the "
            "neighbour search (default: all cores); 1 avoids large slow-downs when other jobs "
            "share the cores",
        },
    )


def _cache_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", metavar="ACTION", choices=("info", "clear"), help="info or clear")
    p.add_argument(
        "--cache-dir", metavar="DIR", help="feature cache folder (default: <icbpl cache>/features)"
    )


#: Each subcommand's help line, description and the function that adds its arguments, in the
#: order ``icbpl --help`` lists them.
_COMMANDS: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = {
    "demo": (
        "cluster scikit-learn's 8x8 digits with ICBPL and k-means (no download)",
        "Cluster scikit-learn's bundled 8x8 digits (1797 images) from raw pixels with ICBPL "
        "(affine views) and with k-means, and print ACC, NMI and ARI of both.",
        _demo_options,
    ),
    "cluster": (
        "cluster a folder of images (or a dataset)",
        "Cluster the images in PATH into K groups with ICBPL: features from a pretrained encoder "
        "(+ augmented views, cached), nearest neighbours, then the ICBPL head. Writes "
        "assignments.csv, latent.npy, summary.json, config.json, model/ and log.txt into --out.",
        _cluster_options,
    ),
    "pretrain": (
        "train an encoder with Barlow Twins on your images (for `cluster --weights DIR`)",
        "Train an encoder self-supervised with Barlow Twins (Zbontar et al. 2021; the paper's "
        "encoders) on the images in PATH, from scratch (--weights random) or from given weights, "
        "with the paper's augmentations. Writes encoder.safetensors + encoder.json into --out, "
        "and a checkpoint after every epoch (--resume continues it). Runs under "
        "`torchrun --nproc_per_node N` too.",
        pretrain_options,
    ),
    "predict": (
        "assign new images with a saved run",
        "Assign the images in PATH to the clusters of a run of `icbpl cluster`, with the same "
        "encoder and preprocessing (read from the run's config.json).",
        _predict_options,
    ),
    "encoders": (
        "list the encoders (or describe encoder folders)",
        "List the registered encoders: feature dimension, input size, how their default weights "
        "were trained, and whether those weights are available. With ENCODER_DIR arguments, load "
        "and describe those encoder folders (of `icbpl pretrain`) instead.",
        _encoders_options,
    ),
    "report": (
        "write report.html for a results folder",
        "Write a self-contained HTML report (thumbnails, a 2-D map of the encoder features, "
        "cluster sizes, per-cluster confidence and mixed/split flags, metrics when labels are "
        "known) of a results folder of `icbpl cluster`.",
        _report_options,
    ),
    "cache": (
        "show (info) or remove (clear) the feature cache",
        "List the cached feature arrays and ONNX exports with their sizes and complete rows "
        "(info), or remove them (clear; other files in the folder are kept).",
        _cache_options,
    ),
}
