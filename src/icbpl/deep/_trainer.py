"""The fine-tuning trainer behind :func:`icbpl.deep.finetune.finetune`: the per-step computation
on the ICBPL objective and the no-gradient passes (the epoch loop is
:meth:`icbpl.deep.loop.EpochLoop.run`)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from icbpl.core.head import ProjectionHead
from icbpl.core.metrics import evaluate
from icbpl.core.neighbours import mine_neighbours
from icbpl.core.objective import icbpl_objective
from icbpl.core.pedcc import make_pedcc
from icbpl.deep.distributed import (
    all_gather_with_grad,
    broadcast_tensor,
    context,
    gather_rows,
    shard_range,
    wrap_ddp,
)
from icbpl.deep.finetune import FinetuneConfig, FinetuneResult, trainable_modules
from icbpl.deep.loop import EpochLoop, EpochRun, StepHook, seconds_per_epoch
from icbpl.deep.pretrain._optim import WarmupCosine, build_optimizer
from icbpl.deep.runtime import AugmentFn, to_float
from icbpl.util.device import autocast_context, peak_memory

if TYPE_CHECKING:
    from icbpl.encoders import Encoder

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)


class _EncoderHead(nn.Module):
    """``images -> head(encoder.encode(images))``: one module, so DDP sees one forward."""

    def __init__(self, encoder: Encoder, head: ProjectionHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.encoder.encode(images))


def _set_modes(encoder: Encoder, head: nn.Module, strategy: str, training: bool) -> None:
    """Train mode for the trained parts, eval mode (fixed BatchNorm statistics) for the rest."""
    encoder.eval()
    head.train(training)
    if training:
        for module in trainable_modules(encoder, strategy):
            module.train()


class Trainer(EpochRun):
    """One fine-tuning run in :meth:`EpochLoop.run` (private; :func:`finetune` is the entry
    point)."""

    name, key, advice = "ICBPL", "total", "lower lr/encoder_lr"

    def __init__(
        self,
        encoder: Encoder,
        images: Tensor,
        cfg: FinetuneConfig,
        augment: AugmentFn,
        dev: torch.device,
        extract_batch_size: int,
    ) -> None:
        super().__init__(images, cfg.batch_size, augment, dev, cfg.seed, cfg.channels_last)
        self.cfg, self.epochs = cfg, cfg.epochs
        self.ctx = context()
        self.extract_bs = int(extract_batch_size)
        torch.manual_seed(cfg.seed)
        self.encoder = copy.deepcopy(encoder).to(dev)
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
        self.optimizer = build_optimizer(
            [
                (list(self.head.named_parameters()), cfg.lr),
                (list(self.encoder.named_parameters()), cfg.encoder_lr),
            ],
            cfg.optimizer,
            cfg.weight_decay,
        )
        steps = images.shape[0] // cfg.batch_size
        self.scheduler = WarmupCosine(
            self.optimizer, cfg.epochs * steps, cfg.warmup_epochs * steps, cfg.final_lr_ratio
        )
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
            with autocast_context(self.dev, self.cfg.precision):
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

    def step(self, idx: Tensor) -> dict[str, Tensor]:
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
            with torch.no_grad(), autocast_context(self.dev, cfg.precision):
                f_views = self.encoder.encode(self.layout(torch.cat(views)))
            feats = torch.cat([self.cache[idx_l], f_views.float(), self.cache[nbr_l]])
            with autocast_context(self.dev, cfg.precision):
                z = self.net(feats)
        else:
            nbr_images = to_float(self.images[nbr_l], channels_last=False)
            batch = self.layout(torch.cat([x[lo:hi], *views, nbr_images]))
            with autocast_context(self.dev, cfg.precision):
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

    def train(
        self,
        labels: np.ndarray | None,
        eval_every: int,
        checkpoint_dir: str | Path | None,
        resume: bool,
        on_step: StepHook | None,
    ) -> FinetuneResult:
        self.labels, self.eval_every = labels, eval_every
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        state = self.state(encoder=self.encoder, head=self.head)
        loop = EpochLoop(state, self.cfg.to_dict(), ckpt, self.dev, on_step)
        return self._result(labels, loop.run(self, resume, "another checkpoint_dir"))

    def begin(self, tensors: dict[str, Tensor]) -> None:
        if "neighbours" in tensors:
            self.neighbours = tensors["neighbours"].to(self.dev)

    def batches(self, epoch: int) -> Iterator[Tensor]:
        refresh = self.cfg.refresh_every > 0 and epoch % self.cfg.refresh_every == 0
        if self.neighbours is None or refresh:
            self.neighbours = self._mine()
        _set_modes(self.encoder, self.head, self.cfg.strategy, training=True)
        return super().batches(epoch)

    def evaluate(self, epoch: int, record: dict[str, float]) -> None:
        if self.labels is not None and self.eval_every > 0 and (epoch + 1) % self.eval_every == 0:
            record.update(evaluate(self.labels, self._assign(self._latents())))

    def extra(self) -> dict[str, Tensor]:
        assert self.neighbours is not None
        return {"neighbours": self.neighbours, "centroids": self.centroids}

    def log(self, record: dict[str, float]) -> None:
        logger.info(
            "finetune[%s] epoch %d/%d loss %.4f (%.1fs)%s",
            self.cfg.strategy,
            record["epoch"] + 1,
            self.cfg.epochs,
            record["total"],
            record["seconds"],
            f" acc {record['acc']:.4f}" if "acc" in record else "",
        )

    def _result(self, labels: np.ndarray | None, history: list[dict[str, float]]) -> FinetuneResult:
        latent = self._latents()
        assigned = self._assign(latent)
        if labels is not None:
            history.append({"epoch": self.cfg.epochs, **evaluate(labels, assigned)})
        assert self.neighbours is not None
        return FinetuneResult(
            labels=assigned,
            latent=latent.cpu().numpy(),
            encoder=self.encoder.eval(),
            head=self.head.eval(),
            centroids=self.centroids.cpu().numpy(),
            neighbours=self.neighbours.cpu().numpy(),
            config=self.cfg,
            history=history,
            seconds_per_epoch=seconds_per_epoch(history),
            peak_memory_bytes=peak_memory(self.dev),
        )

    def _assign(self, latent: Tensor) -> np.ndarray:
        """Nearest PEDCC point of each latent (by cosine; latents are unit vectors)."""
        return (latent @ self.centroids.T).argmax(dim=1).cpu().numpy().astype(np.int64)
