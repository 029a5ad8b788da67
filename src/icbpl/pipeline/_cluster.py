"""`run_cluster`: `cluster_into` a staging folder that `ResultsFolder` swaps in at the end."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from icbpl.pipeline._config import ClusterConfig
from icbpl.pipeline._outdir import ResultsFolder
from icbpl.pipeline._run import cluster_into
from icbpl.pipeline._summary import ClusterRun, StageCallback

if TYPE_CHECKING:
    from icbpl.model.progress import FitProgress

__all__ = ["run_cluster"]

logger = logging.getLogger(__name__)


def run_cluster(
    config: ClusterConfig,
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: bool = True,
    on_stage: StageCallback | None = None,
    on_note: StageCallback | None = None,
    on_progress: FitProgress | None = None,
    command: str | None = None,
) -> ClusterRun:
    """Cluster the images ``config`` names and write a results folder (see the module notes).

    The results are written into a staging folder beside ``out_dir`` and swapped in at the end
    (`ResultsFolder`): a run that fails or is interrupted leaves earlier results as they were.

    Args:
        config: what to run.
        out_dir: results folder: new, empty, or (with ``overwrite``) an earlier run's.
        overwrite: replace the results of an earlier run in ``out_dir`` (only the files its
            manifest lists; a folder icbpl did not write is always refused).
        progress, on_stage, on_note, on_progress, command: as for `cluster_into`.

    Raises:
        PipelineError: as `cluster_into`; ``out_dir`` not usable (`ResultsFolder`).
    """
    config.validate()
    out = Path(out_dir)
    if config.finetune != "frozen":
        from icbpl.deep.distributed import context

        if not context().is_main:  # a torchrun rank > 0: trains its share, writes nothing
            return cluster_into(config, out, progress=False, on_stage=on_stage, command=command)
    with ResultsFolder(out, overwrite=overwrite) as staging:
        run = cluster_into(
            config,
            staging,
            progress=progress,
            on_stage=on_stage,
            on_note=on_note,
            on_progress=on_progress,
            command=command,
        )
    run.out_dir = out
    logger.info("wrote results to %s", out)
    return run
