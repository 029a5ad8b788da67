"""Training the ICBPL head on fixed embeddings (features of originals, views and neighbours)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from icbpl.head import ProjectionHead
from icbpl.metrics import cluster_sizes, evaluate
from icbpl.neighbours import mine_neighbours
from icbpl.objective import LossWeights, icbpl_objective
from icbpl.selection import label_free_score

__all__ = ["EpochRecord", "TrainConfig", "TrainResult", "train_head"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of head training (defaults: the paper's, section 4.2, unless noted)."""

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
    min_distance_warmup: int = 0
    feature_power: float = 1.0
    init_epochs: int = 0
    assignment_temperature: float = 0.1
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


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
    """The selected head, its epoch, and the per-epoch history."""

    head: ProjectionHead
    best_epoch: int
    history: list[EpochRecord]
    neighbours: np.ndarray


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
    head.train()
    for epoch in range(config.init_epochs):
        total, steps = 0.0, 0
        for idx in _batches(n, config.batch_size, gen, x.device):
            z = head(x[idx])
            loss = (1.0 - (z * centroids[t[idx]]).sum(1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + float(loss.detach()), steps + 1
        logger.info(
            "warm start %d/%d: loss %.4f", epoch + 1, config.init_epochs, total / max(steps, 1)
        )


def _assignment_pair(
    head: ProjectionHead,
    x: Tensor,
    views: Tensor | None,
    idx: Tensor,
    z: Tensor,
    z_views: Tensor | None,
    nb_t: Tensor,
    gen: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Anchors and neighbours of the assignment loss, as SCAN feeds them: augmented views.

    The anchor is the batch's view (the original without views); the partner is a random one of
    each sample's neighbours, itself through a random view when there are views.
    """
    col = torch.randint(nb_t.shape[1], (idx.numel(),), generator=gen).to(idx.device)
    j = nb_t[idx, col]
    if views is None or z_views is None:
        return z, head(x[j])
    pick = torch.randint(views.shape[0], (idx.numel(),), generator=gen).to(idx.device)
    return z_views, head(views[pick, j])


def _embed(head: ProjectionHead, x: Tensor, batch: int = 4096) -> Tensor:
    was_training = head.training
    head.eval()
    with torch.no_grad():
        out = torch.cat([head(x[i : i + batch]) for i in range(0, x.shape[0], batch)])
    head.train(was_training)
    return out


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
            PEDCC point of its target (mean cosine distance; beyond the paper), so training starts
            from a spread-out partition instead of a random head. These epochs are not in the
            history and are never selected.

    The returned head is the one of the epoch with the best label-free score
    (:func:`icbpl.selection.label_free_score`).
    """
    device = x.device
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    n, dim = x.shape
    head = ProjectionHead(dim, config.hidden, config.latent_dim, config.feature_power).to(device)
    head.fit_standardisation(x)
    opt = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    k_nb = config.n_neighbours
    nb = neighbours
    if nb is None and k_nb > 0:
        nb = mine_neighbours(x, k_nb)
    nb_t = torch.as_tensor(nb, device=device) if nb is not None else None
    input_nb = nb
    n_views = 0 if views is None else views.shape[0]
    if init_targets is not None and config.init_epochs > 0:
        _warm_start(head, opt, x, centroids, init_targets, config, gen)
    if config.weights.assignment and nb_t is None:
        logger.warning("the assignment loss needs neighbours (n_neighbours > 0); it is left out")
    logger.info("training %d epochs on %d samples", config.epochs, n)
    history: list[EpochRecord] = []
    best_score, best_state, best_epoch = -np.inf, copy.deepcopy(head.state_dict()), 0
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        w = config.weights
        if config.min_distance_warmup and epoch <= config.min_distance_warmup:
            w = dataclasses.replace(w, min_distance=0.0)
        head.train()
        sums: dict[str, float] = {}
        steps = 0
        for idx in _batches(n, config.batch_size, gen, device):
            z = head(x[idx])
            z_views = None
            if views is not None:
                pick = torch.randint(n_views, (idx.numel(),), generator=gen).to(device)
                z_views = head(views[pick, idx])
            z_nb = None
            if nb_t is not None:
                col = torch.randint(nb_t.shape[1], (idx.numel(),), generator=gen).to(device)
                z_nb = head(x[nb_t[idx, col]])
            z_assign = None
            if nb_t is not None and w.assignment:
                z_assign = _assignment_pair(head, x, views, idx, z, z_views, nb_t, gen)
            out = icbpl_objective(
                z,
                centroids,
                z_views=z_views,
                z_neighbours=z_nb,
                weights=w,
                distance=config.distance,
                z_assign=z_assign,
                temperature=config.assignment_temperature,
            )
            opt.zero_grad(set_to_none=True)
            out["total"].backward()
            opt.step()
            for key, val in out.items():
                sums[key] = sums.get(key, 0.0) + float(val.detach())
            steps += 1
        latent = _embed(head, x)
        labels = (latent @ centroids.T).argmax(1).cpu().numpy()
        sizes = cluster_sizes(labels, config.n_clusters)
        score = label_free_score(labels, input_nb, config.n_clusters)
        record = EpochRecord(
            epoch=epoch,
            losses={k: v / max(steps, 1) for k, v in sums.items()},
            sizes=sizes.tolist(),
            score=score,
            seconds=time.perf_counter() - t0,
            metrics=evaluate(y, labels) if y is not None else None,
        )
        history.append(record)
        logger.info(
            "epoch %d: loss %.4f score %.4f empty %d%s",
            epoch,
            record.losses.get("total", float("nan")),
            score,
            int((sizes == 0).sum()),
            f" acc {record.metrics['acc']:.4f}" if record.metrics else "",
        )
        if callback is not None:
            callback(record)
        if score > best_score:
            best_score, best_state, best_epoch = score, copy.deepcopy(head.state_dict()), epoch
        if nb_t is not None and config.refresh_every and epoch % config.refresh_every == 0:
            if epoch < config.epochs:
                nb = mine_neighbours(latent, k_nb)
                nb_t = torch.as_tensor(nb, device=device)
    head.load_state_dict(best_state)
    head.eval()
    return TrainResult(
        head=head,
        best_epoch=best_epoch,
        history=history,
        neighbours=nb if nb is not None else np.zeros((n, 0), np.int64),
    )
