"""What a run hands back and writes: stage timings, the output files and ``summary.json``.

Shared by the frozen run (`icbpl.pipeline.cluster_into`) and the fine-tuning run
(`icbpl.pipeline._finetune.run_finetune`), which write the same files and summary keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from icbpl.pipeline._config import CONFIG_FORMAT, CONFIG_VERSION, ClusterConfig
from icbpl.pipeline._stages import image_paths, save_npy, write_assignments
from icbpl.util.atomic import jsonable, write_json

__all__ = [
    "ClusterRun",
    "RunSummary",
    "StageTimer",
    "finish_run",
    "model_parts",
    "peak_rss_mb",
    "save_novelty",
    "unassigned_by_rule",
    "write_outputs",
]

#: The encoder-feature centroid of every cluster, for the novelty rule of `predict_run`.
FEATURE_CENTROIDS = "feature_centroids.npy"

StageCallback = Callable[[str], None]

logger = logging.getLogger(__name__)


@dataclass
class ClusterRun:
    """What :func:`run_cluster` produced.

    Attributes:
        out_dir: the results folder.
        summary: the contents of ``summary.json``.
        labels: ``(N,)`` cluster of each image.
        source: the image source that was clustered (for reports of array datasets).
        record: the summary as a :class:`RunSummary` (``None`` on ranks other than 0).
    """

    out_dir: Path
    summary: dict[str, Any]
    labels: np.ndarray
    source: Any = field(repr=False, default=None)
    record: RunSummary | None = field(repr=False, default=None)


#: Fields only one kind of run has (fine-tuning: ``finetune``; frozen: the others), left out of
#: ``summary.json`` where they do not apply.
_ONE_KIND = ("finetune", "csv_neutralised", "novelty", "peak_rss_mb")


@dataclass(kw_only=True)
class RunSummary:
    """``summary.json`` as a type: its keys, in the file's order (:meth:`to_dict`)."""

    icbpl_version: str
    command: str | None
    settings: dict[str, Any]
    n_clusters: int
    k_choice: dict[str, Any] | None
    n_images: int
    source: dict[str, Any]
    encoder: dict[str, Any]
    finetune: dict[str, Any] | None = None
    features: dict[str, Any]
    icbpl: dict[str, Any]
    class_names: list[str] | None
    skipped: list[list[str]]
    csv_neutralised: list[Any] | None = None
    degraded: list[list[str]]
    duplicate_groups: list[Any]
    cluster_sizes: list[int]
    empty_clusters: list[int]
    novelty: dict[str, Any] | None = None
    metrics: dict[str, float] | None
    best_epoch: int
    start: dict[str, Any] | None = None
    heads: list[dict[str, Any]]
    timings: dict[str, float]
    peak_rss_mb: float | None = None
    history: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, without the other kind of run's fields."""
        fields = ((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))
        return {name: v for name, v in fields if v is not None or name not in _ONE_KIND}


class StageTimer:
    """Seconds of each named stage (``timings``); ``on_stage`` hears each name as it starts."""

    def __init__(self, on_stage: StageCallback | None = None) -> None:
        self.on_stage = on_stage or (lambda name: None)
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.on_stage(name)
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t0, 3)

    def finish(self) -> float:
        """Record and return the ``total`` since the timer was made."""
        self.timings["total"] = round(time.perf_counter() - self._start, 3)
        return self.timings["total"]


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (``getrusage``; memory-mapped pages
    that were read count too)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def write_outputs(
    out: Path,
    config: ClusterConfig,
    source: Any,
    model: Any,
    assigned: tuple[np.ndarray, np.ndarray, np.ndarray],
    neighbours: np.ndarray | None,
) -> None:
    """``assignments.csv``, ``latent.npy``, ``neighbours.npy`` (when given), ``model/`` and
    ``config.json``; ``assigned`` is ``(clusters, scores, latent)``."""
    clusters, scores, latent = assigned
    write_assignments(
        out / "assignments.csv",
        list(source.ids),
        image_paths(source),
        clusters,
        scores,
        source.labels,
    )
    save_npy(out / "latent.npy", latent)
    if neighbours is not None:
        save_npy(out / "neighbours.npy", neighbours.astype(np.int64))
    model.save(out / "model")
    write_json(
        out / "config.json",
        {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, "config": config.to_dict()},
    )


def finish_run(
    out: Path,
    config: ClusterConfig,
    source: Any,
    clusters: np.ndarray,
    k: int,
    encoder: dict[str, Any],
    command: str | None,
    parts: dict[str, Any],
    timed: StageTimer,
) -> ClusterRun:
    """Write ``summary.json`` (a :class:`RunSummary`): what every run has, and ``parts``, the
    fields the kind of run fills (``k_choice``, ``features``, ``icbpl``, ``history`` ...)."""
    from icbpl import __version__
    from icbpl.core.metrics import evaluate

    total = timed.finish()
    sizes = np.bincount(clusters, minlength=k)
    labels = source.labels
    summary = RunSummary(
        icbpl_version=__version__,
        command=command,
        settings=config.to_dict(),
        n_clusters=k,
        n_images=len(source),
        source={
            "path": str(Path(config.path).expanduser().resolve()),
            "dataset": config.dataset,
            "split": config.split,
            "type": type(source).__name__,
            "fingerprint": source.fingerprint(),
        },
        encoder=encoder,
        **parts,
        class_names=source.class_names,
        skipped=[list(item) for item in source.skipped],
        degraded=[list(item) for item in getattr(source, "degraded", [])],
        duplicate_groups=getattr(source, "duplicate_groups", []),
        cluster_sizes=sizes.tolist(),
        empty_clusters=np.flatnonzero(sizes == 0).tolist(),
        metrics=evaluate(labels, clusters) if labels is not None else None,
        timings=timed.timings,
    )
    write_json(out / "summary.json", summary.to_dict())
    logger.info("wrote the outputs into %s (%.1f s)", out, total)
    return ClusterRun(out, jsonable(summary.to_dict()), clusters, source, record=summary)


def model_parts(model: Any) -> dict[str, Any]:
    """The fitted model's entries of ``summary.json``."""
    return {
        "icbpl": model.get_params(),
        "best_epoch": int(model.best_epoch_),
        "start": dataclasses.asdict(model.start_) if model.start_ is not None else None,
        "heads": model.heads_,
        "history": [dataclasses.asdict(r) for r in model.history_],
    }


def save_novelty(out: Path, features: np.ndarray, clusters: np.ndarray, k: int) -> dict[str, Any]:
    """Write ``feature_centroids.npy`` and return the calibrated "unassigned" rule."""
    from icbpl.core.novelty import DEFAULT_QUANTILE, calibrate, feature_centroids, similarity

    centroids = feature_centroids(features, clusters, k)
    save_npy(out / FEATURE_CENTROIDS, centroids)
    threshold = calibrate(similarity(features, centroids), DEFAULT_QUANTILE)
    return {
        "threshold": round(threshold, 6),
        "quantile": DEFAULT_QUANTILE,
        "rule": "unassigned when the cosine of the encoder features to the nearest cluster's "
        f"mean feature direction is below the threshold ({DEFAULT_QUANTILE:.0%} of the "
        "training images are)",
    }


def _novelty_rule(run: Path) -> tuple[np.ndarray, float] | None:
    """The run's feature centroids and threshold, or ``None`` for runs saved without them."""
    summary = run / "summary.json"
    if not (run / FEATURE_CENTROIDS).is_file() or not summary.is_file():
        return None
    rule = json.loads(summary.read_text("utf-8")).get("novelty") or {}
    if "threshold" not in rule:
        return None
    centroids = np.load(run / FEATURE_CENTROIDS, allow_pickle=False)
    return centroids, float(rule["threshold"])


def unassigned_by_rule(run: Path, features: np.ndarray) -> np.ndarray | None:
    """Which rows are far from every cluster by the run's novelty rule (None without one)."""
    rule = _novelty_rule(run)
    if rule is None:
        logger.warning("%s has no novelty rule (an older run): no image is marked unassigned", run)
        return None
    from icbpl.core.novelty import similarity

    return similarity(features, rule[0]) < rule[1]
