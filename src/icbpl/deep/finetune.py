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

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from icbpl.core.head import ProjectionHead
from icbpl.core.metrics import evaluate
from icbpl.core.neighbours import mine_neighbours
from icbpl.core.objective import LossWeights, icbpl_objective
from icbpl.core.pedcc import make_pedcc
from icbpl.deep.distributed import (
    all_gather_with_grad,
    barrier,
    broadcast_tensor,
    context,
    gather_rows,
    shard_range,
    wrap_ddp,
)
from icbpl.deep.pretrain._loop import encoder_metadata
from icbpl.deep.pretrain._optim import WarmupCosine, build_optimizer
from icbpl.deep.pretrain._runtime import (
    AugmentFn,
    autocast,
    batches,
    default_augment,
    images_as_tensor,
    new_generator,
    peak_memory,
    resolve_device,
    synchronize,
    to_float,
)
from icbpl.util.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint, save_weights

if TYPE_CHECKING:
    from icbpl.encoders import Encoder

__all__ = ["STRATEGIES", "FinetuneConfig", "FinetuneResult", "finetune", "trainable_modules"]

logger = logging.getLogger(__name__)

STRATEGIES = ("frozen", "last2", "all")

#: Called after every optimiser step with (epoch, step in epoch, losses).
StepHook = Callable[[int, int, dict[str, float]], None]


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
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


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
        save_weights(
            out / "encoder.safetensors",
            self.encoder.state_dict(),
            encoder_metadata(self.encoder, finetune=self.config.to_dict()),
        )
        save_weights(
            out / "head.safetensors",
            self.head.state_dict(),
            {
                "in_dim": self.head.in_dim,
                "hidden": list(self.head.hidden),
                "latent_dim": self.head.latent_dim,
            },
        )
        save_weights(
            out / "result.safetensors",
            {
                "labels": torch.from_numpy(self.labels),
                "latent": torch.from_numpy(self.latent),
                "centroids": torch.from_numpy(self.centroids),
                "neighbours": torch.from_numpy(self.neighbours),
            },
            {
                "config": self.config.to_dict(),
                "history": self.history,
                "seconds_per_epoch": self.seconds_per_epoch,
                "peak_memory_bytes": self.peak_memory_bytes,
            },
        )
        return out


class _EncoderHead(nn.Module):
    """``images -> head(encoder.encode(images))``: one module, so DDP sees one forward."""

    def __init__(self, encoder: Encoder, head: ProjectionHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.encoder.encode(images))


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


def _set_modes(encoder: Encoder, head: nn.Module, strategy: str, training: bool) -> None:
    """Train mode for the trained parts, eval mode (fixed BatchNorm statistics) for the rest."""
    encoder.eval()
    head.train(training)
    if training:
        for module in trainable_modules(encoder, strategy):
            module.train()


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
        weights, distance: the objective (:func:`icbpl.core.objective.icbpl_objective`); the four
            paper losses only (``weights.assignment`` must be 0).
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
    cfg = FinetuneConfig(
        n_clusters=int(n_clusters),
        strategy=strategy,
        latent_dim=int(latent_dim),
        hidden=tuple(int(h) for h in hidden),
        epochs=int(epochs),
        batch_size=int(batch_size),
        lr=float(lr),
        encoder_lr=float(encoder_lr),
        weight_decay=float(weight_decay),
        optimizer=optimizer,
        warmup_epochs=int(warmup_epochs),
        final_lr_ratio=float(final_lr_ratio),
        weights=weights or LossWeights(),
        distance=distance,
        n_neighbours=int(n_neighbours),
        neighbours_per_step=int(neighbours_per_step),
        refresh_every=int(refresh_every),
        n_views=int(n_views),
        precision=precision,
        channels_last=channels_last,
        seed=int(seed),
    )
    ctx = context()
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}; expected one of {STRATEGIES}")
    if cfg.n_clusters < 2 or cfg.epochs < 1 or cfg.n_views < 1:
        raise ValueError(
            f"n_clusters={cfg.n_clusters} should be >= 2, epochs={cfg.epochs} >= 1 and "
            f"n_views={cfg.n_views} >= 1"
        )
    if cfg.batch_size < 2 or cfg.batch_size % ctx.world_size:
        raise ValueError(
            f"batch_size={cfg.batch_size} should be >= 2 and divisible by the "
            f"{ctx.world_size} processes"
        )
    if not 1 <= cfg.neighbours_per_step <= cfg.n_neighbours:
        raise ValueError(
            f"neighbours_per_step={cfg.neighbours_per_step} should lie in [1, n_neighbours="
            f"{cfg.n_neighbours}]"
        )
    if cfg.weights.assignment:
        raise ValueError(
            f"weights.assignment={cfg.weights.assignment} is not supported by finetune (the "
            "fifth loss needs the estimator's anchor/neighbour batches); set it to 0, or fit "
            "icbpl.ICBPL on extracted features to use it"
        )
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir (where the checkpoints are)")
    dev = resolve_device(device)
    size = int(encoder.config.input_size)
    images = images_as_tensor(source, size).to(dev)
    n = images.shape[0]
    if n < cfg.batch_size or n <= cfg.n_neighbours:
        raise ValueError(
            f"n_samples={n} should be >= batch_size={cfg.batch_size} and > n_neighbours="
            f"{cfg.n_neighbours}"
        )
    if labels is None:
        labels = getattr(source, "labels", None)
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} images")
    trainer = _Trainer(
        encoder, images, cfg, augment or default_augment(size, "weak"), dev, extract_batch_size
    )
    return trainer.run(labels, eval_every, checkpoint_dir, resume, on_step)


class _Trainer:
    """State of one fine-tuning run (private; :func:`finetune` is the entry point)."""

    def __init__(
        self,
        encoder: Encoder,
        images: Tensor,
        cfg: FinetuneConfig,
        augment: AugmentFn,
        dev: torch.device,
        extract_batch_size: int,
    ) -> None:
        self.cfg = cfg
        self.ctx = context()
        self.images = images
        self.augment = augment
        self.dev = dev
        self.extract_bs = int(extract_batch_size)
        torch.manual_seed(cfg.seed)
        self.encoder = copy.deepcopy(encoder).to(dev)
        self.cl = dev.type == "cuda" if cfg.channels_last is None else cfg.channels_last
        if self.cl:
            self.encoder = self.encoder.to(memory_format=torch.channels_last)
        trained = {
            id(p) for m in trainable_modules(self.encoder, cfg.strategy) for p in m.parameters()
        }
        for p in self.encoder.parameters():
            p.requires_grad_(id(p) in trained)
        feature_dim = int(self.encoder.config.feature_dim)
        self.head = ProjectionHead(feature_dim, cfg.hidden, cfg.latent_dim).to(dev)
        self.centroids = (
            torch.from_numpy(make_pedcc(cfg.n_clusters, cfg.latent_dim, cfg.seed)).float().to(dev)
        )
        self.model = _EncoderHead(self.encoder, self.head)
        feats = self._features()
        self.head.fit_standardisation(feats)
        self.cache = feats if cfg.strategy == "frozen" else None
        self.opt = build_optimizer(
            [
                (list(self.head.named_parameters()), cfg.lr),
                (list(self.encoder.named_parameters()), cfg.encoder_lr),
            ],
            cfg.optimizer,
            cfg.weight_decay,
        )
        self.steps = images.shape[0] // cfg.batch_size
        self.sched = WarmupCosine(
            self.opt, cfg.epochs * self.steps, cfg.warmup_epochs * self.steps, cfg.final_lr_ratio
        )
        self.shuffle = new_generator(torch.device("cpu"), cfg.seed)
        self.aug_gen = new_generator(dev, cfg.seed + 1)
        self.neighbours: Tensor | None = None
        self.net = wrap_ddp(self.head if cfg.strategy == "frozen" else self.model, dev)

    # ------------------------------------------------------------------ no-gradient passes

    @torch.no_grad()
    def _pass(self, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """``fn`` over this rank's shard of the images in eval mode, gathered to (N, ...)."""
        _set_modes(self.encoder, self.head, self.cfg.strategy, training=False)
        start, stop = shard_range(self.images.shape[0], self.ctx)
        outs = []
        for s in range(start, stop, self.extract_bs):
            x = to_float(self.images[s : min(stop, s + self.extract_bs)], self.cl)
            with autocast(self.dev, self.cfg.precision):
                outs.append(fn(x).float())
        return gather_rows(torch.cat(outs), self.ctx)

    def _features(self) -> Tensor:
        return self._pass(self.encoder.encode)

    def _latents(self) -> Tensor:
        return self._pass(self.model)

    def _mine(self) -> Tensor:
        feats = self.cache if self.cache is not None else self._features()
        k = self.cfg.n_neighbours
        if self.ctx.is_main:
            idx = torch.from_numpy(mine_neighbours(feats, k)).to(self.dev)
        else:
            idx = torch.empty((feats.shape[0], k), dtype=torch.int64, device=self.dev)
        return broadcast_tensor(idx)

    # ------------------------------------------------------------------ training

    def _state(self) -> dict[str, Any]:
        return {
            "modules": {"encoder": self.encoder, "head": self.head},
            "optimizers": {"opt": self.opt},
            "schedulers": {"sched": self.sched},
            "generators": {"shuffle": self.shuffle, "augment": self.aug_gen},
        }

    def _step(self, idx: Tensor) -> dict[str, Tensor]:
        cfg = self.cfg
        b = idx.shape[0]
        local = b // self.ctx.world_size
        lo, hi = self.ctx.rank * local, (self.ctx.rank + 1) * local
        assert self.neighbours is not None
        nbr = self.neighbours[idx.to(self.dev)]
        if cfg.neighbours_per_step < cfg.n_neighbours:
            pick = torch.rand((b, cfg.n_neighbours), generator=self.shuffle).argsort(dim=1)
            nbr = nbr.gather(1, pick[:, : cfg.neighbours_per_step].to(self.dev))
        idx_dev = idx.to(self.dev)
        x = to_float(self.images[idx_dev], channels_last=False)
        views = [self.augment(x, self.aug_gen)[lo:hi] for _ in range(cfg.n_views)]
        idx_l, nbr_l = idx_dev[lo:hi], nbr[lo:hi].reshape(-1)
        m = cfg.neighbours_per_step
        if self.cache is not None:
            with torch.no_grad(), autocast(self.dev, cfg.precision):
                f_views = self.encoder.encode(self._layout(torch.cat(views)))
            feats = torch.cat([self.cache[idx_l], f_views.float(), self.cache[nbr_l]])
            with autocast(self.dev, cfg.precision):
                z = self.net(feats)
        else:
            nbr_images = to_float(self.images[nbr_l], channels_last=False)
            batch = self._layout(torch.cat([x[lo:hi], *views, nbr_images]))
            with autocast(self.dev, cfg.precision):
                z = self.net(batch)
        z = z.float()
        z_o, z_v, z_n = z.split([local, local * cfg.n_views, local * m])
        z_o = all_gather_with_grad(z_o)
        z_v = all_gather_with_grad(z_v.view(cfg.n_views, local, -1).transpose(0, 1).contiguous())
        z_n = all_gather_with_grad(z_n.view(local, m, -1))
        return icbpl_objective(
            z_o,
            self.centroids,
            z_views=z_v.transpose(0, 1),
            z_neighbours=z_n,
            weights=cfg.weights,
            distance=cfg.distance,
        )

    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cl else x

    def run(
        self,
        labels: np.ndarray | None,
        eval_every: int,
        checkpoint_dir: str | Path | None,
        resume: bool,
        on_step: StepHook | None,
    ) -> FinetuneResult:
        cfg = self.cfg
        history: list[dict[str, float]] = []
        start = 0
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        if resume and ckpt is not None and has_checkpoint(ckpt):
            ck = load_checkpoint(ckpt, **self._state())
            assert ck is not None
            if ck.meta.get("config") != cfg.to_dict():
                raise ValueError(
                    f"checkpoint in {ckpt} was written with {ck.meta.get('config')}, not "
                    f"{cfg.to_dict()}; resume with the same settings or another checkpoint_dir"
                )
            start, history = ck.epoch, list(ck.meta["history"])
            self.neighbours = ck.tensors["neighbours"].to(self.dev)
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            refresh = cfg.refresh_every > 0 and epoch % cfg.refresh_every == 0
            if self.neighbours is None or refresh:
                self.neighbours = self._mine()
            _set_modes(self.encoder, self.head, cfg.strategy, training=True)
            order = torch.randperm(self.images.shape[0], generator=self.shuffle)
            sums: dict[str, Tensor] = {}
            for step, idx in enumerate(batches(order, cfg.batch_size, drop_last=True)):
                losses = self._step(idx)
                self.opt.zero_grad(set_to_none=True)
                losses["total"].backward()
                self.opt.step()
                self.sched.step()
                for key, value in losses.items():
                    sums[key] = sums[key] + value.detach() if key in sums else value.detach()
                if on_step is not None:
                    on_step(epoch, step, {k: float(v.detach()) for k, v in losses.items()})
            synchronize(self.dev)
            record: dict[str, float] = {"epoch": epoch}
            record.update({k: float(v) / self.steps for k, v in sums.items()})
            record["seconds"] = time.perf_counter() - t0
            if not math.isfinite(record["total"]):
                raise FloatingPointError(
                    f"ICBPL loss became {record['total']} in epoch {epoch}; lower lr/encoder_lr "
                    "or use precision='fp32'"
                )
            if labels is not None and eval_every > 0 and (epoch + 1) % eval_every == 0:
                record.update(evaluate(labels, self._assign(self._latents())))
            history.append(record)
            if self.ctx.is_main:
                logger.info(
                    "finetune[%s] epoch %d/%d loss %.4f (%.1fs)%s",
                    cfg.strategy,
                    epoch + 1,
                    cfg.epochs,
                    record["total"],
                    record["seconds"],
                    f" acc {record['acc']:.4f}" if "acc" in record else "",
                )
                if ckpt is not None:
                    save_checkpoint(
                        ckpt,
                        epoch=epoch + 1,
                        tensors={"neighbours": self.neighbours, "centroids": self.centroids},
                        meta={"config": cfg.to_dict(), "history": history},
                        **self._state(),
                    )
            barrier()
        latent = self._latents()
        assigned = self._assign(latent)
        if labels is not None:
            history.append({"epoch": cfg.epochs, **evaluate(labels, assigned)})
        timed = [h["seconds"] for h in history if "seconds" in h]
        timed = timed[1:] or timed
        assert self.neighbours is not None
        return FinetuneResult(
            labels=assigned,
            latent=latent.cpu().numpy(),
            encoder=self.encoder.eval(),
            head=self.head.eval(),
            centroids=self.centroids.cpu().numpy(),
            neighbours=self.neighbours.cpu().numpy(),
            config=cfg,
            history=history,
            seconds_per_epoch=sum(timed) / max(1, len(timed)),
            peak_memory_bytes=peak_memory(self.dev),
        )

    def _assign(self, latent: Tensor) -> np.ndarray:
        """Nearest PEDCC point of each latent (by cosine; latents are unit vectors)."""
        return (latent @ self.centroids.T).argmax(dim=1).cpu().numpy().astype(np.int64)
