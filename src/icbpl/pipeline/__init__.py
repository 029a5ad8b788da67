"""End-to-end clustering of an image source: the stages behind ``icbpl cluster`` and ``predict``.

Stages hand off explicit arrays (docs/DESIGN.md): source -> features and augmented views
(`icbpl.features`, cached) -> neighbours (`icbpl.core.neighbours`) ->
`icbpl.model.estimator.ICBPL` -> results. :func:`run_cluster` writes a results folder:

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
``.icbpl-manifest.json`` the marker of an icbpl results folder: the files the run wrote (only
                   those are ever replaced or removed; see `ResultsFolder`)
``encoder/``       with ``finetune="last2"``/``"all"`` only: the fine-tuned encoder (an encoder
                   folder, `icbpl.deep.pretrain.read_encoder_folder`), which `predict_run` uses
================== ==========================================================================

Every file is written atomically, into a staging folder that replaces ``--out`` only when the
run has finished; a foreign folder is refused, an earlier run's needs ``overwrite``. Cells of
``assignments.csv`` that a spreadsheet would evaluate (``=``, ``+``, ``-``, ``@``, tab, CR) get a
leading ``'`` (`neutralise_cell`; `restore_cell` reverses it; ``summary.json`` lists the raw
values under ``csv_neutralised``).

The same configuration and seed give the same assignments on the CPU (random encoder weights
are drawn from ``seed`` too). :func:`predict_run` assigns new images with a saved run.
"""

from __future__ import annotations

from icbpl.pipeline._cluster import run_cluster
from icbpl.pipeline._config import ClusterConfig, PipelineError
from icbpl.pipeline._outdir import ResultsFolder
from icbpl.pipeline._run import (
    Prediction,
    cluster_into,
    predict_run,
)
from icbpl.pipeline._stages import (
    build_encoder,
    cache_dir_path,
    image_loader_for,
    open_source,
    source_loader,
    write_assignments,
)
from icbpl.pipeline._summary import ClusterRun, RunSummary
from icbpl.util.csvcell import neutralise_cell, restore_cell

__all__ = [
    "ClusterConfig",
    "ClusterRun",
    "PipelineError",
    "Prediction",
    "ResultsFolder",
    "RunSummary",
    "build_encoder",
    "cache_dir_path",
    "cluster_into",
    "image_loader_for",
    "neutralise_cell",
    "open_source",
    "predict_run",
    "restore_cell",
    "run_cluster",
    "source_loader",
    "write_assignments",
]
