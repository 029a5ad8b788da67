"""`run_cluster` and `predict_run`: the stages chained, with timings and the results folder."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from icbpl.model.warmstart import neighbours_to_mine
from icbpl.pipeline._config import ClusterConfig, PipelineError
from icbpl.pipeline._outdir import refuse_run_output
from icbpl.pipeline._stages import (
    build_encoder,
    encoder_stage,
    extract,
    image_paths,
    images_stage,
    neutralised_rows,
    open_source,
    resolve_k,
    write_assignments,
)
from icbpl.pipeline._summary import (
    ClusterRun,
    StageCallback,
    StageTimer,
    finish_run,
    model_parts,
    peak_rss_mb,
    save_novelty,
    unassigned_by_rule,
    write_outputs,
)

if TYPE_CHECKING:
    from icbpl.model.estimator import ICBPL
    from icbpl.model.progress import FitProgress

__all__ = ["ClusterRun", "Prediction", "cluster_into", "predict_run"]

logger = logging.getLogger(__name__)

#: Fewer images than this per cluster get a warning: too few to learn or judge clusters from.
MIN_PER_CLUSTER = 5


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
    on_progress: FitProgress | None = None,
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
        on_progress: ``ICBPL.fit``'s progress events (:class:`icbpl.model.progress.FitEvent`).
        command: the command line, recorded in ``summary.json``.

    Raises:
        PipelineError: invalid configuration, fewer images than clusters.
        icbpl.data.DataError: no images, unknown dataset.
        ImportError, FileNotFoundError: weights that are not installed or not found.
    """
    from icbpl.core.neighbours import mine_neighbours

    config.validate()
    if config.finetune != "frozen":
        from icbpl.pipeline._finetune import run_finetune

        return run_finetune(config, folder, progress=progress, on_stage=on_stage, command=command)
    out = Path(folder)
    timed = StageTimer(on_stage)
    encoder, encoder_info = encoder_stage(config, timed)
    source = images_stage(config, timed, progress)
    with timed("features"):
        fs = extract(encoder, source, config, config.views, progress)
    # the cache's read-only memory maps, never copied whole (read block by block)
    features = np.asarray(fs.features, dtype=np.float32)
    views = np.asarray(fs.views, dtype=np.float32) if fs.views is not None else None
    with timed("choose_k") if config.k == "auto" else contextlib.nullcontext():
        k, k_choice = resolve_k(config.k, config.k_range, features, config.seed, progress=progress)
    n_neighbours = _check_sizes(config, len(source), k, k_choice, on_note)
    n_mine = neighbours_to_mine(config.init, n_neighbours, len(source))
    with timed("neighbours"):
        neighbours = mine_neighbours(features, n_mine, progress=progress) if n_mine else None
    with timed("train"):
        nb = (neighbours, n_neighbours)
        model = _fit(config, features, views, nb, source.labels, k, on_progress)
    with timed("write"):
        latent = model.transform(features).astype(np.float32)
        clusters, scores = _assign(model, features, latent, model.labels_)
        kept = neighbours[:, :n_neighbours] if neighbours is not None and n_neighbours else None
        write_outputs(out, config, source, model, (clusters, scores, latent), kept)
        novelty = save_novelty(out, features, clusters, k)
    parts = {
        "k_choice": k_choice,
        "features": {k_: v for k_, v in fs.meta.items() if k_ != "encoder"},
        **model_parts(model),
        "csv_neutralised": neutralised_rows(list(source.ids), image_paths(source)),
        "novelty": novelty,
        "peak_rss_mb": peak_rss_mb(),
    }
    return finish_run(out, config, source, clusters, k, encoder_info, command, parts, timed)


def _check_sizes(
    config: ClusterConfig,
    n: int,
    k: int,
    k_choice: dict[str, Any] | None,
    on_note: StageCallback | None,
) -> int:
    """Refuse fewer images than clusters, warn about small ones; the neighbours to use."""
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
    return n_neighbours


def _fit(
    config: ClusterConfig,
    features: np.ndarray,
    views: np.ndarray | None,
    nb: tuple[np.ndarray | None, int],
    labels: np.ndarray | None,
    k: int,
    progress: FitProgress | None,
) -> ICBPL:
    """`ICBPL` with the configuration's parameters, fitted on the features (seeded); ``nb``:
    the mined neighbours and how many of them the kNN loss uses."""
    from icbpl.model.estimator import ICBPL
    from icbpl.util.device import resolve_device, seeded

    neighbours, n_neighbours = nb

    model = ICBPL(
        **config.model_params(
            n_clusters=k,
            epochs=config.resolved_epochs(len(features)),
            n_neighbours=n_neighbours,
            device=str(resolve_device(config.device)),
        )
    )
    with seeded(config.seed):
        return model.fit(features, labels, views=views, neighbours=neighbours, progress=progress)


def _assign(
    model: ICBPL, features: np.ndarray, latent: np.ndarray, clusters: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Clusters (``clusters``, or the model's prediction) and the ``score`` column: cosine of
    each latent to its cluster's centroid (high is typical)."""
    table = latent @ model.centroids_.T
    if clusters is None:  # the model's prediction, with its cluster offsets
        clusters = model.predict(features)
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
    from icbpl.model.estimator import ICBPL

    run = Path(run_dir)
    out = Path(out_csv)
    refuse_run_output(out, run)
    stage = on_stage or (lambda name: None)
    config = ClusterConfig.from_file(run)
    if not (run / "model" / "model.safetensors").is_file():
        raise PipelineError(f"{run / 'model'} holds no saved model; re-run `icbpl cluster`")
    stage("encoder")
    encoder = _run_encoder(run, config)
    model = ICBPL.load(run / "model")
    stage("images")
    source = open_source(path, dataset, split, progress=progress, include_hidden=include_hidden)
    stage("features")
    given = {"batch_size": batch_size, "device": device, "precision": precision}
    options: dict[str, Any] = {name: v for name, v in given.items() if v}
    cache = config.cache_dir if cache_dir is None else cache_dir
    fs = extract(
        encoder, source, dataclasses.replace(config, cache_dir=cache, **options), 0, progress
    )
    stage("assign")
    features = np.asarray(fs.features, dtype=np.float32)
    clusters, scores = _assign(model, features, model.transform(features))
    unassigned = unassigned_by_rule(run, features)
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


def _run_encoder(run: Path, config: ClusterConfig) -> Any:
    """The encoder of the run in ``run`` (its fine-tuned one, if any), checked against the
    weights digest its ``summary.json`` recorded."""
    from icbpl.features import weights_digest

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
    return encoder
