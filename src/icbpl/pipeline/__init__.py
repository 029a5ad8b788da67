"""End-to-end clustering of an image source: the stages behind ``icbpl cluster`` and ``predict``.

Stages hand off explicit arrays (docs/DESIGN.md): source -> features and augmented views
(`icbpl.features`, cached) -> neighbours (`icbpl.neighbours`) -> `icbpl.estimator.ICBPL` ->
results. :func:`run_cluster` writes a results folder:

================== ==========================================================================
``assignments.csv`` ``id,path,cluster,score[,label]``, one row per image in source order; ``score``
                   is the cosine of the image's latent to its cluster's PEDCC point
``latent.npy``     ``(N, d)`` float32 latent features, same row order
``neighbours.npy`` ``(N, K)`` int64 neighbour indices the head was trained with
``summary.json``   settings, encoder (with ``supervised``), counts, skipped files, cluster sizes,
                   timings per stage, peak resident memory (``peak_rss_mb``), metrics when
                   labels are known, best epoch, history, and ``k_choice`` (candidates and
                   scores) when ``k="auto"``
``config.json``    the :class:`ClusterConfig` (``ClusterConfig.from_file`` repeats the run)
``model/``         the fitted head (`ICBPL.save`)
================== ==========================================================================

The same configuration and seed give the same assignments on the CPU (random encoder weights
are drawn from ``seed`` too). :func:`predict_run` assigns new images with a saved run.
"""

from __future__ import annotations

from icbpl.pipeline._config import ClusterConfig, PipelineError
from icbpl.pipeline._run import (
    ClusterRun,
    Prediction,
    image_loader_for,
    predict_run,
    run_cluster,
)
from icbpl.pipeline._stages import (
    build_encoder,
    open_source,
    prepare_out_dir,
    source_loader,
    write_assignments,
)

__all__ = [
    "ClusterConfig",
    "ClusterRun",
    "PipelineError",
    "Prediction",
    "build_encoder",
    "image_loader_for",
    "open_source",
    "predict_run",
    "prepare_out_dir",
    "run_cluster",
    "source_loader",
    "write_assignments",
]
