"""End-to-end ICBPL fine-tuning: encoder + projection head trained with the ICBPL objective.

Paper (arXiv 2408.01920, section 3.4): starting from a self-supervised encoder, the last two
stages (``last2``) or all layers (``all``) are trained together with the FC head that maps
features onto the unit sphere, under the same losses as head training (MMD to the PEDCC points,
augmentation consistency, kNN consistency, distance to the nearest PEDCC point). ``frozen`` keeps
the encoder fixed (its features of the originals are computed once and cached).

Per step, for a global batch ``B`` of images: ``n_views`` augmented views are made on the fly on
the training device; one of each sample's ``K`` neighbours (``neighbours_per_step``, SCAN-style
sampling; the paper's head training uses all ``K`` on cached features) is drawn; originals, views
and neighbours go through the network in one forward pass, and
:func:`icbpl.core.objective.icbpl_objective` is evaluated on their latents. Neighbours are the ``K``
nearest by cosine in the current encoder's feature space (self excluded), mined at epoch 0 and
again every ``refresh_every`` epochs. The cluster of an image is its nearest PEDCC point.

Frozen modules are put in eval mode so their BatchNorm statistics never move; a checkpoint is
written after every epoch and ``resume=True`` continues bit-for-bit (CPU, fp32) where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from icbpl.core.head import ProjectionHead
from icbpl.core.objective import LossWeights
from icbpl.deep.loop import StepHook, check_run
from icbpl.deep.pretrain._folder import ENCODER_FILE, save_encoder
from icbpl.deep.runtime import AugmentFn, default_augment, images_as_tensor
from icbpl.util.checkpoint import save_weights
from icbpl.util.device import resolve_device
from icbpl.util.plain import config_from, plain_dict

if TYPE_CHECKING:
    from icbpl.encoders import Encoder

__all__ = ["STRATEGIES", "FinetuneConfig", "FinetuneResult", "finetune", "trainable_modules"]


STRATEGIES = ("frozen", "last2", "all")


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters of fine-tuning (recorded in checkpoints and saved results)."""

    n_clusters: int = 10
    strategy: str = "last2"
    latent_dim: int = 100
    hidden: tuple[int, ...] = (512,)
    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    encoder_lr: float = 1e-4
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    warmup_epochs: int = 0
    final_lr_ratio: float = 0.1
    weights: LossWeights = field(default_factory=LossWeights)
    distance: str = "cosine"
    n_neighbours: int = 4
    neighbours_per_step: int = 1
    refresh_every: int = 30
    n_views: int = 1
    precision: str = "auto"
    channels_last: bool | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return plain_dict(self)


@dataclass
class FinetuneResult:
    """Fine-tuned encoder and head (trained copies), cluster labels and the training record."""

    labels: np.ndarray
    latent: np.ndarray
    encoder: Encoder
    head: ProjectionHead
    centroids: np.ndarray
    neighbours: np.ndarray
    config: FinetuneConfig
    history: list[dict[str, float]] = field(default_factory=list)
    seconds_per_epoch: float = float("nan")
    peak_memory_bytes: int = 0

    def save(self, directory: str | Path) -> Path:
        """Write ``encoder.safetensors``/``.json``, ``head.safetensors``/``.json`` and
        ``result.safetensors``/``.json`` (labels, latents, PEDCC points, neighbours, history)."""
        out = Path(directory)
        save_encoder(out / ENCODER_FILE, self.encoder, finetune=self.config.to_dict())
        head = self.head
        meta = {"in_dim": head.in_dim, "hidden": list(head.hidden), "latent_dim": head.latent_dim}
        save_weights(out / "head.safetensors", head.state_dict(), meta)
        arrays = ("labels", "latent", "centroids", "neighbours")
        tensors = {name: torch.from_numpy(getattr(self, name)) for name in arrays}
        record = ("history", "seconds_per_epoch", "peak_memory_bytes")
        meta = {"config": self.config.to_dict(), **{name: getattr(self, name) for name in record}}
        save_weights(out / "result.safetensors", tensors, meta)
        return out


def trainable_modules(encoder: Encoder, strategy: str) -> list[nn.Module]:
    """The parts of ``encoder`` that ``strategy`` trains: none, ``stages()[-2:]`` or the whole."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}; expected one of {STRATEGIES}")
    if strategy == "frozen":
        return []
    if strategy == "all":
        return [encoder]
    stages = list(encoder.stages())
    if len(stages) < 2:
        raise ValueError(f"strategy='last2' needs an encoder with >= 2 stages, got {len(stages)}")
    return stages[-2:]


def finetune(
    encoder: Encoder,
    source: Any,
    n_clusters: int = 10,
    *,
    strategy: str = "last2",
    latent_dim: int = 100,
    hidden: Sequence[int] = (512,),
    epochs: int = 50,
    batch_size: int = 256,
    lr: float = 1e-3,
    encoder_lr: float = 1e-4,
    weight_decay: float = 0.0,
    optimizer: str = "adamw",
    warmup_epochs: int = 0,
    final_lr_ratio: float = 0.1,
    weights: LossWeights | None = None,
    distance: str = "cosine",
    n_neighbours: int = 4,
    neighbours_per_step: int = 1,
    refresh_every: int = 30,
    n_views: int = 1,
    augment: AugmentFn | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    channels_last: bool | None = None,
    seed: int = 0,
    labels: np.ndarray | None = None,
    eval_every: int = 0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    on_step: StepHook | None = None,
    extract_batch_size: int = 512,
) -> FinetuneResult:
    """Cluster the images of ``source`` by training ``encoder`` (a copy) and an ICBPL head.

    Args:
        encoder: an :class:`icbpl.encoders.Encoder` (``encode``, ``stages``, ``config``).
        source: an :class:`icbpl.data.ImageSource` or uint8 ``(N, 3, H, W)`` images.
        n_clusters: number of clusters ``k`` (PEDCC points on the ``latent_dim`` sphere).
        strategy: ``"frozen"``, ``"last2"`` (``encoder.stages()[-2:]`` + head) or ``"all"``.
        latent_dim, hidden: the head (:class:`icbpl.core.head.ProjectionHead`).
        epochs, batch_size: ``batch_size`` is the global batch (divisible by the process count);
            the last incomplete batch of an epoch is dropped.
        lr, encoder_lr: learning rates of the head and of the trained encoder parts.
        weight_decay, optimizer: ``"adamw"`` (default), ``"sgd"`` or ``"lars"``.
        warmup_epochs, final_lr_ratio: linear warm-up then cosine decay to ``final_lr_ratio``.
        weights, distance: the objective (:func:`icbpl.core.objective.icbpl_objective`).
        n_neighbours, neighbours_per_step, refresh_every: ``K`` neighbours per sample, how many
            of them enter each step (drawn at random), and the re-mining period in epochs
            (``0``: mined once).
        n_views: augmented views per sample per step; ``augment(images, generator)`` makes them
            (default: :class:`icbpl.features.augment.BatchAugment` with its defaults).
        device, precision, channels_last: as in :func:`icbpl.deep.pretrain.pretrain_barlow_twins`.
        seed: seeds the head, the PEDCC points, shuffling, neighbour draws and augmentations.
        labels: ground truth for evaluation only (defaults to ``source.labels``); with
            ``eval_every > 0`` ACC/NMI/ARI enter the history every ``eval_every`` epochs.
        checkpoint_dir, resume: a checkpoint per epoch; ``resume=True`` continues from it.
        on_step: called after each optimiser step with (epoch, step, losses).
        extract_batch_size: batch size of the no-gradient passes (features, final latents).
    """
    cfg = config_from(FinetuneConfig, locals(), weights=weights or LossWeights())
    _check_config(cfg, resume and checkpoint_dir is None)
    dev = resolve_device(device)
    size = int(encoder.config.input_size)
    images = images_as_tensor(source, size).to(dev)
    labels = getattr(source, "labels", None) if labels is None else labels
    _check_inputs(cfg, images.shape[0], labels)
    augment = augment or default_augment(size, "weak")
    from icbpl.deep._trainer import Trainer

    trainer = Trainer(encoder, images, cfg, augment, dev, extract_batch_size)
    return trainer.train(labels, eval_every, checkpoint_dir, resume, on_step)


def _check_inputs(cfg: FinetuneConfig, n: int, labels: np.ndarray | None) -> None:
    if n < cfg.batch_size or n <= cfg.n_neighbours:
        raise ValueError(
            f"n_samples={n} should be >= batch_size={cfg.batch_size} and > n_neighbours="
            f"{cfg.n_neighbours}"
        )
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} images")


def _check_config(cfg: FinetuneConfig, resume_without_dir: bool) -> None:
    """Raise ValueError for a configuration ``finetune`` cannot run (naming the field)."""
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"strategy={cfg.strategy!r}; expected one of {STRATEGIES}")
    check_run(cfg.epochs, cfg.batch_size, "checkpoint_dir" if resume_without_dir else None)
    if cfg.n_clusters < 2 or cfg.n_views < 1:
        raise ValueError(
            f"n_clusters={cfg.n_clusters} should be >= 2 and n_views={cfg.n_views} >= 1"
        )
    if not 1 <= cfg.neighbours_per_step <= cfg.n_neighbours:
        raise ValueError(
            f"neighbours_per_step={cfg.neighbours_per_step} should lie in [1, n_neighbours="
            f"{cfg.n_neighbours}]"
        )
