"""``run_cluster`` with ``finetune="last2"`` or ``"all"``: gradients reach the encoder.

The images, the encoder and the head are trained together by :func:`icbpl.deep.finetune.finetune`
(augmented views made on the fly, neighbours re-mined from the current encoder every
``refresh_every`` epochs). The results folder holds the same files as a frozen run, plus the
fine-tuned encoder under ``encoder/`` (an encoder folder,
`icbpl.deep.pretrain.read_encoder_folder`), which :func:`icbpl.pipeline.predict_run` uses.
Under ``torchrun`` every rank trains on its share of each global batch and only rank 0 writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from icbpl.pipeline._config import ClusterConfig, PipelineError
from icbpl.pipeline._stages import encoder_info, encoder_stage, images_stage
from icbpl.pipeline._summary import ClusterRun, StageTimer, finish_run, model_parts, write_outputs

__all__ = ["FINETUNED_ENCODER", "run_finetune"]

logger = logging.getLogger(__name__)

#: Where a fine-tuning run keeps its encoder, inside the results folder.
FINETUNED_ENCODER = Path("encoder") / "encoder.safetensors"

#: ClusterConfig fields that `icbpl.deep.finetune.finetune` takes under the same name.
_FINETUNE_ARGS = (
    "latent_dim hidden lr encoder_lr weight_decay distance refresh_every device precision seed"
).split()


def _global_batch(config: ClusterConfig, n: int, world: int) -> int:
    batch = min(config.train_batch_size, n)
    batch -= batch % world
    if batch < 2:
        raise PipelineError(
            f"{n} images are too few for fine-tuning in {world} processes; add images"
        )
    return batch


def _train(config: ClusterConfig, encoder: Any, source: Any, k: int, progress: bool) -> Any:
    from tqdm.auto import tqdm

    from icbpl.core.objective import LossWeights
    from icbpl.deep.distributed import context
    from icbpl.deep.finetune import finetune
    from icbpl.util.device import seeded

    ctx = context()
    n = len(source)
    epochs = config.resolved_epochs(n)
    batch = _global_batch(config, n, ctx.world_size)
    bar: Any = tqdm(
        total=epochs * (n // batch),
        desc=f"fine-tuning ({config.finetune})",
        unit="step",
        disable=not (progress and ctx.is_main),
    )

    def on_step(epoch: int, step: int, losses: dict[str, float]) -> None:
        bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{losses['total']:.3f}")
        bar.update(1)

    try:
        with seeded(config.seed):
            return finetune(
                encoder,
                source,
                k,
                strategy=config.finetune,
                epochs=epochs,
                batch_size=batch,
                weights=LossWeights(*config.loss_weights),
                n_neighbours=min(config.n_neighbours, n - 1),
                n_views=config.views,
                labels=source.labels,
                on_step=on_step,
                **{name: getattr(config, name) for name in _FINETUNE_ARGS},
            )
    finally:
        bar.close()


def _estimator(result: Any, config: ClusterConfig, k: int, epochs: int) -> Any:
    """An `icbpl.ICBPL` holding the fine-tuned head (for ``model/`` and `predict_run`)."""
    from icbpl.model.estimator import ICBPL

    # the frozen path's start, schedule and heads do not apply: ICBPL's defaults
    unused = ("init", "patience", "n_heads")
    params = config.model_params(
        n_clusters=k,
        epochs=epochs,
        batch_size=result.config.batch_size,
        n_neighbours=result.config.n_neighbours,
    )
    model = ICBPL(**{name: v for name, v in params.items() if name not in unused})
    model.head_ = result.head.cpu().eval()
    model.centroids_ = np.asarray(result.centroids, dtype=np.float32)
    model.n_features_in_ = int(result.head.in_dim)
    model.best_epoch_ = epochs - 1  # no label-free selection: the last epoch's model
    model.labels_ = result.labels
    model.history_ = []
    model.start_ = None
    model.heads_ = []
    return model


def _save_encoder(result: Any, out: Path, config: ClusterConfig) -> Path:
    from icbpl.deep.pretrain import save_encoder

    options = {} if config.input_size is None else {"input_size": config.input_size}
    create = {"encoder": config.encoder, "options": options, "started_from": config.weights}
    finetune = result.config.to_dict()
    return save_encoder(out / FINETUNED_ENCODER, result.encoder, finetune=finetune, create=create)


def _parts(
    config: ClusterConfig, result: Any, model: Any, start_digest: str, processes: int
) -> dict[str, Any]:
    """What a fine-tuning run adds to ``summary.json``."""
    return {
        "k_choice": None,
        "finetune": {
            "strategy": config.finetune,
            "encoder_file": str(FINETUNED_ENCODER),
            "start_weights_digest": start_digest,
            "processes": processes,
            "seconds_per_epoch": result.seconds_per_epoch,
            "config": result.config.to_dict(),
        },
        "features": {},
        **model_parts(model),
        "history": result.history,
    }


def run_finetune(
    config: ClusterConfig,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    on_stage: Callable[[str], None] | None = None,
    command: str | None = None,
) -> ClusterRun:
    """`icbpl.pipeline.run_cluster` for ``config.finetune`` ``"last2"``/``"all"``.

    Returns the same `icbpl.pipeline.ClusterRun` (on ranks other than 0 with an empty summary:
    they write nothing).
    """
    from icbpl.deep.distributed import context

    config.validate()
    ctx = context()
    out = Path(out_dir)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    timed = StageTimer(on_stage)
    encoder, start = encoder_stage(config, timed)
    source = images_stage(config, timed, progress and ctx.is_main)
    n, k = len(source), int(config.k)
    with timed("finetune"):
        result = _train(config, encoder, source, k, progress)
    epochs = config.resolved_epochs(n)
    if not ctx.is_main:
        return ClusterRun(out_dir=out, summary={}, labels=result.labels, source=source)

    with timed("write"):
        model = _estimator(result, config, k, epochs)
        latent = np.asarray(result.latent, dtype=np.float32)
        clusters = np.asarray(result.labels, dtype=np.int64)
        scores = (latent @ model.centroids_.T)[np.arange(n), clusters]
        write_outputs(out, config, source, model, (clusters, scores, latent), result.neighbours)
        _save_encoder(result, out, config)
    parts = _parts(config, result, model, start["weights_digest"], ctx.world_size)
    info = encoder_info(result.encoder)
    return finish_run(out, config, source, clusters, k, info, command, parts, timed)
