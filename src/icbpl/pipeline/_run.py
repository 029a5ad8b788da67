"""`run_cluster` and `predict_run`: the stages chained, with timings and the results folder."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from icbpl.pipeline._config import CONFIG_FORMAT, CONFIG_VERSION, ClusterConfig, PipelineError
from icbpl.pipeline._outdir import refuse_run_output
from icbpl.pipeline._stages import (
    build_encoder,
    extract,
    image_paths,
    jsonable,
    neutralised_rows,
    open_source,
    resolve_k,
    save_npy,
    seeded_torch,
    source_loader,
    write_assignments,
    write_json,
)
from icbpl.util.csvcell import restore_cell

if TYPE_CHECKING:
    from icbpl.model.estimator import ICBPL

__all__ = ["ClusterRun", "Prediction", "cluster_into", "image_loader_for", "predict_run"]

logger = logging.getLogger(__name__)

StageCallback = Callable[[str], None]

#: Fewer images than this per cluster get a warning: too few to learn or judge clusters from.
MIN_PER_CLUSTER = 5
#: The encoder-feature centroid of every cluster, for the novelty rule of `predict_run`.
FEATURE_CENTROIDS = "feature_centroids.npy"


@dataclass
class ClusterRun:
    """What :func:`run_cluster` produced.

    Attributes:
        out_dir: the results folder.
        summary: the contents of ``summary.json``.
        labels: ``(N,)`` cluster of each image.
        source: the image source that was clustered (for reports of array datasets).
    """

    out_dir: Path
    summary: dict[str, Any]
    labels: np.ndarray
    source: Any = field(repr=False, default=None)


@dataclass
class Prediction:
    """What :func:`predict_run` produced: the CSV written and a summary of it; ``unassigned``
    marks the images far from every cluster (`icbpl.core.novelty`; ``None`` for older runs)."""

    out_csv: Path
    labels: np.ndarray
    scores: np.ndarray
    sizes: list[int]
    metrics: dict[str, float] | None
    skipped: list[tuple[str, str]]
    n_images: int
    unassigned: np.ndarray | None = None


# ------------------------------------------------------------------------------ cluster
def cluster_into(
    config: ClusterConfig,
    folder: Path,
    *,
    progress: bool = True,
    on_stage: StageCallback | None = None,
    on_note: StageCallback | None = None,
    command: str | None = None,
) -> ClusterRun:
    """Run the stages and write the results into the existing ``folder`` (a staging folder of
    `ResultsFolder`; use `run_cluster` for a results folder).

    Args:
        config: what to run.
        folder: where the outputs are written.
        progress: show progress bars (stderr) for the folder scan and feature extraction.
        on_stage: called with each stage's name as it starts (``"encoder"``, ``"images"``,
            ``"features"``, ``"choose_k"`` (``k="auto"`` only), ``"neighbours"``, ``"train"``,
            ``"write"``; with ``config.finetune`` ``"last2"``/``"all"``: ``"encoder"``,
            ``"images"``, ``"finetune"``, ``"write"``).
        on_note: called with one-line news worth showing on screen as it happens (the chosen k
            and its best candidates, before training).
        command: the command line, recorded in ``summary.json``.

    Raises:
        PipelineError: invalid configuration, fewer images than clusters.
        icbpl.data.DataError: no images, unknown dataset.
        ImportError, FileNotFoundError: weights that are not installed or not found.
    """
    from icbpl import __version__
    from icbpl.core.metrics import evaluate
    from icbpl.core.neighbours import mine_neighbours
    from icbpl.features import weights_digest
    from icbpl.model.estimator import ICBPL
    from icbpl.util.device import resolve_device

    config.validate()
    if config.finetune != "frozen":
        from icbpl.pipeline._finetune import run_finetune

        return run_finetune(config, folder, progress=progress, on_stage=on_stage, command=command)
    out = Path(folder)
    stage = on_stage or (lambda name: None)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    def timed(name: str) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def block() -> Iterator[None]:
            stage(name)
            t0 = time.perf_counter()
            yield
            timings[name] = round(time.perf_counter() - t0, 3)

        return block()

    with timed("encoder"):
        encoder = build_encoder(config.encoder, config.weights, config.input_size, config.seed)
        enc_cfg = encoder.config
        digest = weights_digest(encoder)
        if enc_cfg.supervised:
            logger.info(
                "encoder %s uses weights trained with labels (supervised): the clustering is not "
                "unsupervised end to end",
                enc_cfg.name,
            )
        if enc_cfg.weights == "random":
            logger.info("encoder %s has random weights (no pretrained weights)", enc_cfg.name)

    with timed("images"):
        source = open_source(
            config.path,
            config.dataset,
            config.split,
            progress=progress,
            include_hidden=config.include_hidden,
        )
        n = len(source)
        if isinstance(config.k, int) and n < config.k:
            raise PipelineError(
                f"{n} images should be >= k={config.k} clusters; pass a smaller --k or add images"
            )

    with timed("features"):
        fs = extract(
            encoder,
            source,
            views=config.views,
            batch_size=config.batch_size,
            device=config.device,
            precision=config.precision,
            cache_dir=config.cache_dir,
            seed=config.seed,
            progress=progress,
        )
        # the cache's read-only memory maps, never copied whole: neighbours, training and
        # writing read them block by block
        features = np.asarray(fs.features, dtype=np.float32)
        views = np.asarray(fs.views, dtype=np.float32) if fs.views is not None else None

    with timed("choose_k") if config.k == "auto" else contextlib.nullcontext():
        k, k_choice = resolve_k(config.k, config.k_range, features, config.seed, progress=progress)
    if n < k:
        raise PipelineError(f"{n} images should be >= k={k} clusters; pass a smaller --k")
    if k_choice is not None and on_note is not None:
        on_note(f"k={k} chosen without labels: {k_choice['message']}")
    if n < MIN_PER_CLUSTER * k:
        logger.warning(
            "only %d images for k=%d clusters (fewer than %d per cluster): the clusters and the "
            "label-free epoch selection say little at this size; add images or lower --k",
            n,
            k,
            MIN_PER_CLUSTER,
        )
    n_neighbours = min(config.n_neighbours, n - 1)
    if n_neighbours < config.n_neighbours:
        logger.warning(
            "only %d images: using %d neighbours instead of %d",
            n,
            n_neighbours,
            config.n_neighbours,
        )

    # init="scan": SCAN's clustering step takes 20 neighbours; the kNN loss its first n_neighbours
    n_mine = min(max(20, n_neighbours), n - 1) if config.init == "scan" else n_neighbours
    with timed("neighbours"):
        neighbours = mine_neighbours(features, n_mine, progress=progress) if n_mine else None

    with timed("train"):
        device = resolve_device(config.device)
        model = ICBPL(
            n_clusters=k,
            latent_dim=config.latent_dim,
            hidden=config.hidden,
            epochs=config.resolved_epochs(n),
            patience=config.patience,
            batch_size=config.train_batch_size,
            lr=config.lr,
            loss_weights=config.loss_weights,
            n_neighbours=n_neighbours,
            refresh_every=config.refresh_every,
            distance=config.distance,
            weight_decay=config.weight_decay,
            min_distance_warmup=config.min_distance_warmup,
            init=config.init,
            n_heads=config.n_heads,
            self_label_epochs=config.self_label_epochs,
            device=str(device),
            random_state=config.seed,
        )
        with seeded_torch(config.seed):
            model.fit(features, source.labels, views=views, neighbours=neighbours)

    with timed("write"):
        latent = model.transform(features).astype(np.float32)
        clusters, scores = _assign(model, features, latent, model.labels_)
        labels = source.labels
        paths = image_paths(source)
        write_assignments(
            out / "assignments.csv", list(source.ids), paths, clusters, scores, labels
        )
        save_npy(out / "latent.npy", latent)
        novelty = _save_novelty(out, features, clusters, k)
        if neighbours is not None and n_neighbours:
            save_npy(out / "neighbours.npy", neighbours[:, :n_neighbours].astype(np.int64))
        model.save(out / "model")
        write_json(
            out / "config.json",
            {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, "config": config.to_dict()},
        )
    timings["total"] = round(time.perf_counter() - t_start, 3)

    sizes = np.bincount(clusters, minlength=k)
    metrics = evaluate(labels, clusters) if labels is not None else None
    summary: dict[str, Any] = {
        "icbpl_version": __version__,
        "command": command,
        "settings": config.to_dict(),
        "n_clusters": k,
        "k_choice": k_choice,
        "n_images": n,
        "source": {
            "path": str(Path(config.path).expanduser().resolve()),
            "dataset": config.dataset,
            "split": config.split,
            "type": type(source).__name__,
            "fingerprint": source.fingerprint(),
        },
        "encoder": {**enc_cfg.to_dict(), "weights_digest": digest},
        "features": {k_: v for k_, v in fs.meta.items() if k_ != "encoder"},
        "icbpl": model.get_params(),
        "class_names": source.class_names,
        "skipped": [list(item) for item in source.skipped],
        "csv_neutralised": neutralised_rows(list(source.ids), paths),
        "degraded": [list(item) for item in getattr(source, "degraded", [])],
        "duplicate_groups": getattr(source, "duplicate_groups", []),
        "cluster_sizes": sizes.tolist(),
        "empty_clusters": np.flatnonzero(sizes == 0).tolist(),
        "novelty": novelty,
        "metrics": metrics,
        "best_epoch": int(model.best_epoch_),
        "heads": model.heads_,
        "self_label": model.self_label_,
        "timings": timings,
        "peak_rss_mb": peak_rss_mb(),
        "history": [dataclasses.asdict(r) for r in model.history_],
    }
    write_json(out / "summary.json", summary)
    logger.info("wrote the outputs into %s (%.1f s)", out, timings["total"])
    return ClusterRun(out_dir=out, summary=jsonable(summary), labels=clusters, source=source)


def _save_novelty(out: Path, features: np.ndarray, clusters: np.ndarray, k: int) -> dict[str, Any]:
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


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (``getrusage``; memory-mapped pages
    that were read count too)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _assign(
    model: ICBPL, features: np.ndarray, latent: np.ndarray, clusters: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Clusters (``clusters``, or the model's prediction) and the ``score`` column: cosine of
    each latent to its cluster's centroid, or, after self-labelling, the classifier's
    probability of the cluster (both: high is typical)."""
    table = (
        latent @ model.centroids_.T if model.classifier_ is None else model.soft_assign(features)
    )
    if clusters is None:
        clusters = table.argmax(axis=1).astype(np.int64)
    return clusters, table[np.arange(len(clusters)), clusters]


# ------------------------------------------------------------------------------ predict
def predict_run(
    run_dir: str | os.PathLike[str],
    path: str,
    out_csv: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    split: str | None = None,
    include_hidden: bool = False,
    batch_size: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
    on_stage: StageCallback | None = None,
) -> Prediction:
    """Assign the images at ``path`` to the clusters of the run saved in ``run_dir``.

    The encoder and its preprocessing are rebuilt from the run's ``config.json`` (random weights
    from its seed) and checked against the digest recorded in ``summary.json``; the head is
    `ICBPL.load` of ``run_dir/model``. Options left ``None`` take the run's values; the
    cache defaults to the run's (``""`` disables it).

    Raises:
        PipelineError: ``run_dir`` is not a results folder, or the encoder weights changed.
    """
    from icbpl.core.metrics import evaluate
    from icbpl.features import weights_digest
    from icbpl.model.estimator import ICBPL

    run = Path(run_dir)
    out = Path(out_csv)
    refuse_run_output(out, run)
    stage = on_stage or (lambda name: None)
    config = ClusterConfig.from_file(run)
    if not (run / "model" / "model.safetensors").is_file():
        raise PipelineError(f"{run / 'model'} holds no saved model; re-run `icbpl cluster`")
    stage("encoder")
    weights = config.weights
    if config.finetune != "frozen":  # the run's own fine-tuned encoder
        from icbpl.pipeline._finetune import FINETUNED_ENCODER

        weights = str(run / FINETUNED_ENCODER)
    encoder = build_encoder(config.encoder, weights, config.input_size, config.seed)
    summary_file = run / "summary.json"
    if summary_file.is_file():
        recorded = json.loads(summary_file.read_text("utf-8")).get("encoder", {})
        expected = recorded.get("weights_digest")
        if expected and weights_digest(encoder) != expected:
            raise PipelineError(
                f"the {config.encoder} weights ({config.weights or 'default'}) differ from those "
                f"the run in {run} was trained with; restore the original weight file"
            )
    model = ICBPL.load(run / "model")
    stage("images")
    source = open_source(path, dataset, split, progress=progress, include_hidden=include_hidden)
    stage("features")
    fs = extract(
        encoder,
        source,
        views=0,
        batch_size=batch_size or config.batch_size,
        device=device or config.device,
        precision=precision or config.precision,
        cache_dir=config.cache_dir if cache_dir is None else cache_dir,
        seed=config.seed,
        progress=progress,
    )
    stage("assign")
    features = np.asarray(fs.features, dtype=np.float32)
    clusters, scores = _assign(model, features, model.transform(features))
    unassigned = None
    rule = _novelty_rule(run)
    if rule is not None:
        from icbpl.core.novelty import similarity

        unassigned = similarity(features, rule[0]) < rule[1]
    else:
        logger.warning("%s has no novelty rule (an older run): no image is marked unassigned", run)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_assignments(
        out, list(source.ids), image_paths(source), clusters, scores, source.labels, unassigned
    )
    k = int(model.centroids_.shape[0])
    return Prediction(
        out_csv=out,
        labels=clusters,
        scores=scores,
        sizes=np.bincount(clusters, minlength=k).tolist(),
        metrics=evaluate(source.labels, clusters) if source.labels is not None else None,
        skipped=list(source.skipped),
        n_images=len(source),
        unassigned=unassigned,
    )


def image_loader_for(run_dir: str | os.PathLike[str]) -> Callable[[int], np.ndarray] | None:
    """Thumbnail loader for a run on a dataset without image files (for `write_report`).

    Rebuilds the run's source from ``config.json`` when ``assignments.csv`` has no paths; returns
    ``None`` when the rows have paths, or when the source cannot be opened or no longer matches.
    """
    run = Path(run_dir)
    try:
        config = ClusterConfig.from_file(run)
        with (run / "assignments.csv").open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (PipelineError, OSError):
        return None
    if not rows or any(r.get("path") for r in rows):
        return None
    try:
        source = open_source(
            config.path, config.dataset, config.split, include_hidden=config.include_hidden
        )
    except (ValueError, OSError) as err:
        logger.warning("no thumbnails: could not reopen the run's images (%s)", err)
        return None
    if list(source.ids) != [restore_cell(r["id"]) for r in rows]:
        logger.warning("no thumbnails: the run's images changed since it ran")
        return None
    return source_loader(source)
