"""Training the ICBPL head on fixed embeddings (features of originals, views and neighbours)."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from icbpl.core.head import ProjectionHead
from icbpl.core.metrics import cluster_sizes, evaluate
from icbpl.core.neighbours import mine_neighbours
from icbpl.core.objective import LossWeights, icbpl_objective
from icbpl.core.selection import label_free_score
from icbpl.model._embedding import embed_labels, fit_standardisation_blocked
from icbpl.model._step import step_latents
from icbpl.util.device import requested_threads, torch_threads
from icbpl.util.plain import plain_dict

__all__ = [
    "SMALL_BATCH",
    "EpochRecord",
    "TrainConfig",
    "TrainResult",
    "make_adam",
    "train_head",
    "train_threads",
]

logger = logging.getLogger(__name__)

SMALL_BATCH = 512
"""Batches up to this many rows train on one torch thread by default (too little work per step
to share between threads)."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of head training (defaults: the paper's, section 4.2, unless noted).

    ``patience`` (beyond the paper): stop once the label-free score has not improved for this
    many epochs (0: run all ``epochs``). ``threads``: torch CPU threads while training; ``None``
    keeps what an enclosing :func:`icbpl.util.device.cpu_threads` (``--threads``) asked for, else
    one thread for batches up to :data:`SMALL_BATCH` rows (:func:`train_threads`).
    """

    n_clusters: int = 10
    latent_dim: int = 100
    hidden: tuple[int, ...] = (512,)
    epochs: int = 60
    batch_size: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    weights: LossWeights = field(default_factory=LossWeights)
    distance: str = "cosine"
    n_neighbours: int = 4
    refresh_every: int = 30
    init_epochs: int = 0
    seed: int = 0
    patience: int = 0
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return plain_dict(self)


@dataclass
class EpochRecord:
    """What one epoch did: mean losses, cluster sizes, label-free score, metrics if labels."""

    epoch: int
    losses: dict[str, float]
    sizes: list[int]
    score: float
    seconds: float
    metrics: dict[str, float] | None = None


@dataclass
class TrainResult:
    """The selected head, its epoch (0: the warm-started head), and the per-epoch history.

    ``start`` is the record of the warm-started head (epoch 0, before any ICBPL epoch; ``None``
    without a warm start); it is not in ``history``.
    """

    head: ProjectionHead
    best_epoch: int
    history: list[EpochRecord]
    neighbours: np.ndarray
    start: EpochRecord | None = None

    @property
    def best_record(self) -> EpochRecord:
        """The record of the selected epoch."""
        if self.best_epoch == 0 and self.start is not None:
            return self.start
        return self.history[self.best_epoch - 1]


def _batches(
    n: int, batch_size: int, gen: torch.Generator, device: torch.device
) -> Iterator[Tensor]:
    """One epoch's shuffled index batches; a last batch of one sample is dropped (BatchNorm)."""
    perm = torch.randperm(n, generator=gen).to(device)
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        if idx.numel() >= 2:
            yield idx


def _warm_start(
    head: ProjectionHead,
    opt: torch.optim.Optimizer,
    x: Tensor,
    centroids: Tensor,
    targets: np.ndarray,
    config: TrainConfig,
    gen: torch.Generator,
) -> None:
    """``config.init_epochs`` epochs of ``1 - cos(z_i, c_{t_i})``: latents go to their targets."""
    n = x.shape[0]
    if targets.shape != (n,) or targets.min() < 0 or targets.max() >= centroids.shape[0]:
        raise ValueError(
            f"init_targets should be ({n},) cluster indices in [0, {centroids.shape[0]}), got "
            f"shape {targets.shape}"
        )
    t = torch.as_tensor(targets, dtype=torch.long, device=x.device)

    def loss(idx: Tensor) -> dict[str, Tensor]:
        return {"total": (1.0 - (head(x[idx]) * centroids[t[idx]]).sum(1)).mean()}

    head.train()
    for epoch in range(config.init_epochs):
        sums, steps = _steps(opt, _batches(n, config.batch_size, gen, x.device), loss)
        mean = sums.get("total", 0.0) / max(steps, 1)
        logger.info("warm start %d/%d: loss %.4f", epoch + 1, config.init_epochs, mean)


def _steps(
    opt: torch.optim.Optimizer,
    batches: Iterable[Tensor],
    losses: Callable[[Tensor], dict[str, Tensor]],
) -> tuple[dict[str, float], int]:
    """An optimiser step on ``losses(batch)["total"]`` per batch; the summed losses and the
    number of steps."""
    sums: dict[str, float] = {}
    steps = 0
    for idx in batches:
        out = losses(idx)
        opt.zero_grad(set_to_none=True)
        out["total"].backward()
        opt.step()
        for key, val in out.items():
            sums[key] = sums.get(key, 0.0) + float(val.detach())
        steps += 1
    return sums, steps


def make_adam(
    params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0
) -> torch.optim.Adam:
    """Adam with the fused kernel where torch has one for the parameters' device, else
    ``foreach``. Same update up to float rounding."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def train_threads(config: TrainConfig, device: torch.device) -> int | None:
    """Torch CPU threads for training (``None``: leave them as they are)."""
    if device.type != "cpu" or requested_threads() is not None:
        return config.threads
    if config.threads is not None:
        return config.threads
    return 1 if config.batch_size <= SMALL_BATCH else None


def train_head(
    x: Tensor,
    centroids: Tensor,
    config: TrainConfig,
    *,
    views: Tensor | None = None,
    neighbours: np.ndarray | None = None,
    y: np.ndarray | None = None,
    callback: Callable[[EpochRecord], None] | None = None,
    init_targets: np.ndarray | None = None,
) -> TrainResult:
    """Train a :class:`ProjectionHead` with the ICBPL objective on fixed features.

    Args:
        x: features (N, D), float32, on the training device.
        centroids: PEDCC points (k, d) on the same device.
        config: hyper-parameters.
        views: features of augmented views (V, N, D), optional.
        neighbours: (N, K) neighbour indices; mined from ``x`` by cosine if omitted. Every
            ``config.refresh_every`` epochs they are re-mined from the current latent space.
        y: labels for evaluation only (recorded in the history; never used for training or
            selection).
        callback: called with each epoch's record (progress display).
        init_targets: optional (N,) cluster index per sample (e.g. k-means labels). Before the
            ICBPL epochs, ``config.init_epochs`` epochs pull each sample's latent towards the
            PEDCC point of its target (mean cosine distance; beyond the paper). The warm-started
            head is scored as epoch 0 (``TrainResult.start``, not in the history) and is a
            candidate like any epoch.

    The returned head is the one of the epoch with the best label-free score
    (:func:`icbpl.core.selection.label_free_score`). Each step runs the head once over the batch's
    samples, views and neighbours together (one BatchNorm batch).
    """
    if config.patience < 0:
        raise ValueError(f"patience={config.patience} should be >= 0 (0: run all epochs)")
    if config.threads is not None and config.threads < 1:
        raise ValueError(f"threads={config.threads} should be >= 1 (or None)")
    with torch_threads(train_threads(config, x.device)):
        return _train(x, centroids, config, views, neighbours, y, callback, init_targets)


def _train(
    x: Tensor,
    centroids: Tensor,
    config: TrainConfig,
    views: Tensor | None,
    neighbours: np.ndarray | None,
    y: np.ndarray | None,
    callback: Callable[[EpochRecord], None] | None,
    init_targets: np.ndarray | None,
) -> TrainResult:
    device = x.device
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    n, dim = x.shape
    head = ProjectionHead(dim, config.hidden, config.latent_dim).to(device)
    fit_standardisation_blocked(head, x)
    opt = make_adam(head.parameters(), config.lr, config.weight_decay)
    k_nb = config.n_neighbours
    nb = neighbours
    if nb is None and k_nb > 0:
        nb = mine_neighbours(x, k_nb, seed=config.seed)
    nb_t = torch.as_tensor(nb, device=device) if nb is not None else None
    input_nb = nb
    best_score, best_state, best_epoch = -np.inf, copy.deepcopy(head.state_dict()), 0
    start: EpochRecord | None = None
    if init_targets is not None and config.init_epochs > 0:
        t0 = time.perf_counter()
        _warm_start(head, opt, x, centroids, init_targets, config, gen)
        labels, _ = embed_labels(head, x, centroids, keep=False)
        start = _record(0, {}, labels, input_nb, config, y, time.perf_counter() - t0)
        logger.info("warm-started head (epoch 0): score %.4f", start.score)
        best_score, best_state = start.score, copy.deepcopy(head.state_dict())
    logger.info("training %d epochs on %d samples", config.epochs, n)
    history: list[EpochRecord] = []
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        sums, steps = _epoch(head, opt, x, views, nb_t, centroids, config, gen)
        refresh = (
            nb_t is not None
            and bool(config.refresh_every)
            and epoch % config.refresh_every == 0
            and epoch < config.epochs
        )
        labels, latent = embed_labels(head, x, centroids, keep=refresh)
        losses = {k: v / max(steps, 1) for k, v in sums.items()}
        record = _record(epoch, losses, labels, input_nb, config, y, time.perf_counter() - t0)
        history.append(record)
        _log_epoch(record)
        if callback is not None:
            callback(record)
        if record.score > best_score:
            best_score, best_epoch = record.score, epoch
            best_state = copy.deepcopy(head.state_dict())
        elif config.patience and epoch - best_epoch >= config.patience:
            logger.info("no better label-free score for %d epochs: stopping", config.patience)
            break
        if refresh and latent is not None:
            nb = mine_neighbours(latent, k_nb, seed=config.seed)
            nb_t = torch.as_tensor(nb, device=device)
    head.load_state_dict(best_state)
    head.eval()
    return TrainResult(
        head=head,
        best_epoch=best_epoch,
        history=history,
        neighbours=nb if nb is not None else np.zeros((n, 0), np.int64),
        start=start,
    )


def _record(
    epoch: int,
    losses: dict[str, float],
    labels: np.ndarray,
    neighbours: np.ndarray | None,
    config: TrainConfig,
    y: np.ndarray | None,
    seconds: float,
) -> EpochRecord:
    """The record of one epoch's partition: sizes, label-free score, metrics when labelled."""
    return EpochRecord(
        epoch=epoch,
        losses=losses,
        sizes=cluster_sizes(labels, config.n_clusters).tolist(),
        score=label_free_score(labels, neighbours, config.n_clusters),
        seconds=seconds,
        metrics=evaluate(y, labels) if y is not None else None,
    )


def _epoch(
    head: ProjectionHead,
    opt: torch.optim.Optimizer,
    x: Tensor,
    views: Tensor | None,
    nb_t: Tensor | None,
    centroids: Tensor,
    config: TrainConfig,
    gen: torch.Generator,
) -> tuple[dict[str, float], int]:
    """One pass over shuffled batches; returns the summed losses and the number of steps."""

    def losses(idx: Tensor) -> dict[str, Tensor]:
        z, z_views, z_nb = step_latents(head, x, views, nb_t, idx, gen)
        return icbpl_objective(
            z,
            centroids,
            z_views=z_views,
            z_neighbours=z_nb,
            weights=config.weights,
            distance=config.distance,
        )

    head.train()
    return _steps(opt, _batches(x.shape[0], config.batch_size, gen, x.device), losses)


def _log_epoch(record: EpochRecord) -> None:
    logger.info(
        "epoch %d: loss %.4f score %.4f empty %d%s",
        record.epoch,
        record.losses.get("total", float("nan")),
        record.score,
        sum(1 for s in record.sizes if s == 0),
        f" acc {record.metrics['acc']:.4f}" if record.metrics else "",
    )
