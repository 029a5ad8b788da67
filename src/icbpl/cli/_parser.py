"""The argument parser of ``icbpl`` (built without importing torch, so ``--help`` is quick)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import cast

from icbpl.cli._types import (
    _at_least_one,
    _k_range_text,
    _loss_weights,
    _positive,
    parse_k,
    parse_k_range,
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
    group = parent.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars or stage lines on stderr"
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log details on stderr and show tracebacks of errors",
    )
    return parent


def _extraction_options(p: argparse.ArgumentParser, *, from_run: bool) -> None:
    def default(name: str) -> str:
        return " (default: the run's)" if from_run else f" (default: {DEFAULTS[name]})"

    p.add_argument(
        "--threads",
        type=_at_least_one,
        metavar="N",
        help="CPU threads of torch, ONNX Runtime and scikit-learn for every stage (default: "
        "torch's, usually one per core, and one thread for training the head at batches of "
        "up to 512); 1 avoids large slow-downs when other jobs share the cores",
    )

    p.add_argument(
        "--batch-size",
        type=_positive,
        metavar="B",
        help="images per encoder forward pass" + default("batch_size"),
    )
    p.add_argument("--device", metavar="DEV", help="auto, cpu, cuda[:i] or mps" + default("device"))
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        help="numeric precision of the encoder" + default("precision"),
    )
    cache = p.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="feature cache folder (default: "
        + ("the run's" if from_run else "$ICBPL_CACHE/features or ~/.cache/icbpl/features")
        + ")",
    )
    cache.add_argument(
        "--no-cache", action="store_true", help="keep features in memory, write no cache"
    )


def _source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        metavar="NAME",
        help="read PATH as this dataset's root (cifar10, cifar100, stl10, mnist, ...)",
    )
    p.add_argument(
        "--split", metavar="S", help="dataset split (train, test, all), or a sub-folder of PATH"
    )
    p.add_argument(
        "--include-hidden",
        action="store_true",
        default=None,
        help="also read files and folders whose names start with '.' (skipped by default)",
    )


def _add_cluster(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p = sub.add_parser(
        "cluster",
        parents=[common],
        help="cluster a folder of images (or a dataset)",
        description=(
            "Cluster the images in PATH into K groups with ICBPL: features from a pretrained "
            "encoder (+ augmented views, cached), nearest neighbours, then the ICBPL head. "
            "Writes assignments.csv, latent.npy, summary.json, config.json, model/ and log.txt "
            "into --out."
        ),
    )
    p.add_argument("path", nargs="?", metavar="PATH", help="folder of images, or a dataset root")
    p.add_argument(
        "--k",
        type=parse_k,
        metavar="K",
        help="number of clusters: an integer >= 2, or 'auto' to choose it without labels "
        "(see --k-range)",
    )
    p.add_argument(
        "--k-range",
        type=parse_k_range,
        metavar="LO..HI",
        help="candidates of --k auto, both ends included, capped below the number of images "
        f"(default: {_k_range_text(d['k_range'])})",
    )
    p.add_argument(
        "--out", metavar="DIR", help="results folder to write (default: ./<PATH name>-icbpl)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier run in --out (only the files it wrote; a "
        "folder icbpl did not write is always refused)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="repeat a run: the config.json of an earlier results folder (options given here "
        "override its values)",
    )
    _source_options(p)
    _cluster_encoder_options(p)
    _cluster_model_options(p)
    _cluster_training_options(p)
    p.set_defaults(command="cluster")


def _cluster_encoder_options(p: argparse.ArgumentParser) -> None:
    """``icbpl cluster``'s encoder, views and extraction options."""
    d = DEFAULTS
    p.add_argument("--encoder", metavar="NAME", help=f"encoder (default: {d['encoder']})")
    p.add_argument(
        "--weights",
        metavar="FILE|DIR",
        help="encoder checkpoint file, an encoder folder of `icbpl pretrain` (its encoder and "
        "input size are used), or 'random' (default: the encoder's default weights)",
    )
    p.add_argument(
        "--input-size", type=_positive, metavar="PX", help="encoder input side in pixels"
    )
    p.add_argument(
        "--views",
        type=_positive,
        metavar="V",
        help=f"augmented views per image (default: {d['views']})",
    )
    p.add_argument(
        "--epochs",
        type=_positive,
        metavar="E",
        help="training epochs of the ICBPL head (default: auto, enough for about 2,000 "
        "training steps, between 20 and 60)",
    )
    _extraction_options(p, from_run=False)
    p.add_argument(
        "--seed", type=_positive, metavar="S", help=f"random seed (default: {d['seed']})"
    )


def _cluster_model_options(p: argparse.ArgumentParser) -> None:
    """``icbpl cluster``'s options of the ICBPL head and its start."""
    d = DEFAULTS
    p.add_argument(
        "--latent-dim",
        type=_positive,
        metavar="D",
        help=f"latent dimension of the head (default: {d['latent_dim']})",
    )
    p.add_argument(
        "--neighbours",
        type=_positive,
        metavar="N",
        help=f"nearest neighbours per image for the neighbour loss (default: {d['n_neighbours']})",
    )
    p.add_argument(
        "--init",
        choices=("random", "kmeans", "scan"),
        help="start of the head: kmeans (default, beyond the paper: k-means on neighbour-smoothed "
        "features, which ICBPL then refines), random (the paper's method), or scan (SCAN's "
        "clustering step; see docs/BENCHMARKS.md); fine-tuning always starts at random",
    )
    p.add_argument(
        "--heads",
        type=_at_least_one,
        metavar="H",
        help="train H heads from different seeds and keep the one with the best label-free "
        "score (beyond the paper; H times the training; default: 1)",
    )
    p.add_argument(
        "--patience",
        type=_positive,
        metavar="E",
        help="stop training once the label-free score has not improved for E epochs (default: "
        "10; 0 runs every epoch)",
    )


def _cluster_training_options(p: argparse.ArgumentParser) -> None:
    """``icbpl cluster``'s options of self-labelling, the losses, fine-tuning and the report."""
    d = DEFAULTS
    p.add_argument(
        "--self-label-epochs",
        type=_positive,
        metavar="E",
        help="after training, distil the clusters into a linear classifier and run E epochs of "
        "SCAN's self-labelling on it (beyond the paper; default: 0, off)",
    )
    p.add_argument(
        "--loss-weights",
        type=_loss_weights,
        metavar="M,A,N,D[,S]",
        help="weights of the MMD, augmentation, kNN and min-distance losses, and optionally of "
        "the assignment loss (beyond the paper: SCAN's loss on the PEDCC assignment) (default: "
        + ",".join(f"{w:g}" for w in cast(tuple[float, ...], d["loss_weights"]))
        + ")",
    )
    p.add_argument(
        "--finetune",
        choices=("frozen", "last2", "all"),
        help="what of the encoder is trained: frozen (default; the head on cached features), "
        "last2 (its last two stages and the head, the paper's fine-tuning) or all (every "
        "layer); last2/all compute features on the fly, so they cost an encoder pass per image, "
        "view and neighbour each epoch (a GPU, or torchrun, for large folders)",
    )
    p.add_argument(
        "--encoder-lr",
        type=float,
        metavar="LR",
        help=f"learning rate of the fine-tuned encoder parts (default: {d['encoder_lr']:g})",
    )
    p.add_argument(
        "--train-batch-size",
        type=_at_least_one,
        metavar="B",
        help=f"images per training step of the head (default: {d['train_batch_size']})",
    )
    p.add_argument("--report", action="store_true", help="also write report.html")
    p.add_argument(
        "--map",
        choices=("tsne", "pca"),
        default="tsne",
        help="2-D map of the report (default: tsne)",
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

    _add_demo(sub, common)
    _add_cluster(sub, common)
    from icbpl.cli._pretrain import add_pretrain_parser

    add_pretrain_parser(sub, common, _source_options)
    _add_predict(sub, common)
    _add_encoders(sub, common)
    _add_report(sub, common)
    _add_cache(sub, common)
    return parser


def _add_demo(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="cluster scikit-learn's 8x8 digits with ICBPL and k-means (no download)",
        description="Cluster scikit-learn's bundled 8x8 digits (1797 images) from raw pixels "
        "with ICBPL (affine views) and with k-means, and print ACC, NMI and ARI of both.",
    )
    demo.add_argument("--seed", type=_positive, default=0, help="random seed (default: 0)")
    demo.add_argument(
        "--epochs", type=_positive, default=60, help="ICBPL training epochs (default: 60)"
    )
    demo.add_argument(
        "--views", type=_positive, default=4, help="affine views per image (default: 4)"
    )


def _add_predict(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    predict = sub.add_parser(
        "predict",
        parents=[common],
        help="assign new images with a saved run",
        description="Assign the images in PATH to the clusters of a run of `icbpl cluster`, "
        "with the same encoder and preprocessing (read from the run's config.json).",
    )
    predict.add_argument("run", metavar="MODEL_DIR", help="results folder of `icbpl cluster`")
    predict.add_argument("path", metavar="PATH", help="folder of images, or a dataset root")
    predict.add_argument("--out", required=True, metavar="FILE.csv", help="CSV file to write")
    _source_options(predict)
    _extraction_options(predict, from_run=True)


def _add_encoders(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    encoders = sub.add_parser(
        "encoders",
        parents=[common],
        help="list the encoders (or describe encoder folders)",
        description="List the registered encoders: feature dimension, input size, how their "
        "default weights were trained, and whether those weights are available. With "
        "ENCODER_DIR arguments, load and describe those encoder folders (of `icbpl pretrain`) "
        "instead.",
    )
    encoders.add_argument(
        "folders", nargs="*", metavar="ENCODER_DIR", help="encoder folders to describe"
    )


def _add_report(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    report = sub.add_parser(
        "report",
        parents=[common],
        help="write report.html for a results folder",
        description="Write a self-contained HTML report (thumbnails, a 2-D map of the encoder "
        "features, cluster sizes, per-cluster confidence and mixed/split flags, metrics when "
        "labels are known) of a results folder of `icbpl cluster`.",
    )
    report.add_argument("results", metavar="RESULTS_DIR", help="results folder")
    report.add_argument(
        "--map", choices=("tsne", "pca"), default="tsne", help="2-D map (default: tsne)"
    )
    report.add_argument(
        "--out", metavar="FILE", help="HTML file (default: RESULTS_DIR/report.html)"
    )
    report.add_argument(
        "--threads",
        type=_at_least_one,
        metavar="N",
        help="CPU threads of the map (t-SNE) and the neighbour search (default: all cores); "
        "1 avoids large slow-downs when other jobs share the cores",
    )


def _add_cache(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    cache = sub.add_parser(
        "cache",
        parents=[common],
        help="show (info) or remove (clear) the feature cache",
        description="List the cached feature arrays and ONNX exports with their sizes and "
        "complete rows (info), or remove them (clear; other files in the folder are kept).",
    )
    cache.add_argument("action", metavar="ACTION", choices=("info", "clear"), help="info or clear")
    cache.add_argument(
        "--cache-dir", metavar="DIR", help="feature cache folder (default: <icbpl cache>/features)"
    )
