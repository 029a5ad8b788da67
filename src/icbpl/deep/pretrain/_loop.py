"""The Barlow Twins pre-training loop."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from icbpl.deep.distributed import (
    all_gather_with_grad,
    barrier,
    broadcast_tensor,
    context,
    wrap_ddp,
)
from icbpl.deep.loop import EpochLoop, EpochRun, StepHook, check_run, seconds_per_epoch
from icbpl.deep.pretrain._folder import ENCODER_FILE, save_encoder
from icbpl.deep.pretrain._loss import BarlowTwins, barlow_twins_loss
from icbpl.deep.pretrain._optim import WarmupCosine, build_optimizer
from icbpl.deep.runtime import AugmentFn, default_augment, images_as_tensor, to_float
from icbpl.util.device import autocast_context, peak_memory, resolve_device
from icbpl.util.plain import config_from, plain_dict

if TYPE_CHECKING:
    from icbpl.encoders import Encoder

__all__ = ["PretrainConfig", "PretrainResult", "pretrain_barlow_twins"]

logger = logging.getLogger(__name__)


#: Default learning rate per 256 samples of each optimiser (scaled linearly with the batch).
_BASE_LR = {"lars": 0.3, "sgd": 0.05, "adamw": 1e-3}
_WEIGHT_DECAY = {"lars": 1e-4, "sgd": 5e-4, "adamw": 1e-4}


@dataclass(frozen=True)
class PretrainConfig:
    """Hyper-parameters of Barlow Twins pre-training (recorded with the saved weights)."""

    epochs: int = 100
    batch_size: int = 256
    projector: tuple[int, ...] = (2048, 2048, 2048)
    lambd: float | None = 5e-3
    loss_scale: float = 1.0
    optimizer: str = "lars"
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    eta: float = 0.02
    warmup_epochs: int = 10
    final_lr_ratio: float = 1e-3
    precision: str = "auto"
    channels_last: bool | None = None
    seed: int = 0

    def resolved_lr(self) -> float:
        """``lr``, or the optimiser's default per 256 samples times ``batch_size / 256``."""
        return self.lr if self.lr is not None else _BASE_LR[self.optimizer] * self.batch_size / 256

    def resolved_weight_decay(self) -> float:
        """``weight_decay`` or the optimiser's default."""
        return self.weight_decay if self.weight_decay is not None else _WEIGHT_DECAY[self.optimizer]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return plain_dict(self)


@dataclass
class PretrainResult:
    """The pre-trained encoder (a trained copy; the input is untouched) and its record."""

    encoder: Encoder
    history: list[dict[str, float]] = field(default_factory=list)
    weights_path: Path | None = None
    seconds_per_epoch: float = float("nan")
    peak_memory_bytes: int = 0


def pretrain_barlow_twins(
    encoder: Encoder,
    source: Any,
    *,
    epochs: int = 100,
    batch_size: int = 256,
    projector: Sequence[int] = (2048, 2048, 2048),
    lambd: float | None = 5e-3,
    loss_scale: float = 1.0,
    optimizer: str = "lars",
    lr: float | None = None,
    weight_decay: float | None = None,
    warmup_epochs: int = 10,
    final_lr_ratio: float = 1e-3,
    augment: AugmentFn | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    channels_last: bool | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    resume: bool = False,
    on_step: StepHook | None = None,
    max_seconds: float | None = None,
    metadata: dict[str, Any] | None = None,
) -> PretrainResult:
    """Pre-train ``encoder`` with Barlow Twins on the images of ``source``.

    Two augmented views of every image are made on the fly, on the training device, in batches;
    the encoder + projector map both (one forward over the concatenated views) and
    :func:`barlow_twins_loss` drives the cross-correlation towards the identity. Under
    ``torchrun`` the loss covers the global batch (:mod:`icbpl.deep.distributed`).

    Args:
        encoder: an :class:`icbpl.encoders.Encoder` (``encode``, ``config``); a copy is trained.
        source: an :class:`icbpl.data.ImageSource` or a uint8 ``(N, 3, H, W)`` tensor (may already
            live on the device); images are resized to ``encoder.config.input_size``.
        epochs, batch_size: ``batch_size`` is the global batch (divisible by the process count);
            the last incomplete batch of an epoch is dropped.
        projector: projector widths (Barlow Twins: 3 layers).
        lambd: off-diagonal weight (``None``: ``1/D``); ``loss_scale`` multiplies the loss.
        optimizer: ``"lars"`` (default), ``"sgd"`` or ``"adamw"``; ``lr`` defaults to 0.3 / 0.05 /
            1e-3 per 256 samples, ``weight_decay`` to 1e-4 / 5e-4 / 1e-4.
        warmup_epochs, final_lr_ratio: linear warm-up then cosine decay (:class:`WarmupCosine`).
        augment: ``augment(images, generator)``; default :func:`default_augment` (strong).
        device: ``None`` picks CUDA, MPS, then CPU; ``precision``: ``auto`` (bf16 autocast on
            CUDA), ``fp32`` or ``bf16``; ``channels_last`` defaults to True on CUDA.
        seed: seeds initialisation of the projector, shuffling and augmentations.
        out_dir: when given, a checkpoint is written every epoch to ``out_dir/checkpoint`` and the
            final encoder to ``out_dir/encoder.safetensors`` + ``encoder.json`` (loadable with
            ``create_encoder(name, weights=out_dir / "encoder.safetensors")``).
        resume: continue from ``out_dir/checkpoint`` when it exists (same settings required).
        on_step: called after each optimiser step with (epoch, step, {"loss": value}).
        max_seconds: stop after the first epoch that ends past this wall time (logged; the
            schedule is not shortened; ``resume=True`` continues it later).
        metadata: extra JSON entries for ``encoder.json`` (e.g. how to rebuild the encoder).
    """
    cfg = config_from(PretrainConfig, locals())
    check_run(cfg.epochs, cfg.batch_size, "out_dir" if resume and out_dir is None else None)
    dev = resolve_device(device)
    size = int(encoder.config.input_size)
    images = images_as_tensor(source, size).to(dev)
    if images.shape[0] < cfg.batch_size:
        raise ValueError(f"n_samples={images.shape[0]} should be >= batch_size={cfg.batch_size}")
    run = _BarlowTwinsRun(encoder, images, cfg, augment or default_augment(size), dev, max_seconds)
    checkpoint_dir = Path(out_dir) / "checkpoint" if out_dir is not None else None
    loop = EpochLoop(run.state(model=run.model), cfg.to_dict(), checkpoint_dir, dev, on_step)
    history = loop.run(run, resume, "use another out_dir")
    return _finish(run.model.encoder.eval(), cfg, history, out_dir, dict(metadata or {}), dev)


class _BarlowTwinsRun(EpochRun):
    """Barlow Twins in :meth:`EpochLoop.run`: two augmented views of each image of the batch,
    one forward over both, the loss over the global batch."""

    name, key = "Barlow Twins", "loss"

    def __init__(
        self,
        encoder: Encoder,
        images: Tensor,
        cfg: PretrainConfig,
        augment: AugmentFn,
        dev: torch.device,
        max_seconds: float | None,
    ) -> None:
        super().__init__(images, cfg.batch_size, augment, dev, cfg.seed, cfg.channels_last)
        self.cfg, self.max_seconds, self.epochs = cfg, max_seconds, cfg.epochs
        self.advice = f"lower lr (now {cfg.resolved_lr()})"
        self.model, self.net, self.optimizer, self.scheduler = _model_and_optimiser(
            encoder, cfg, dev, self.cl, images.shape[0] // cfg.batch_size
        )
        ctx = context()
        local = cfg.batch_size // ctx.world_size
        self.lo, self.hi = ctx.rank * local, (ctx.rank + 1) * local

    def begin(self, tensors: dict[str, Tensor]) -> None:
        self.t_run = time.perf_counter()

    def step(self, idx: Tensor) -> dict[str, Tensor]:
        x = to_float(self.images[idx.to(self.dev)], channels_last=False)
        views = torch.cat([self.augment(x, self.aug_gen)[self.lo : self.hi] for _ in range(2)])
        with autocast_context(self.dev, self.cfg.precision):
            z = self.net(self.layout(views))
        z1, z2 = z.float().chunk(2)
        loss = barlow_twins_loss(all_gather_with_grad(z1), all_gather_with_grad(z2), self.cfg.lambd)
        return {"loss": self.cfg.loss_scale * loss}

    def record(self, epoch: int, means: dict[str, float]) -> dict[str, float]:
        return {"loss": means["loss"], "lr": self.scheduler.get_last_lr()[0]}

    def log(self, record: dict[str, float]) -> None:
        logger.info(
            "barlow twins epoch %d/%d loss %.4f lr %.3g (%.1fs)",
            record["epoch"] + 1,
            self.epochs,
            record["loss"],
            record["lr"],
            record["seconds"],
        )

    def stop(self, epoch: int) -> bool:
        """Past ``max_seconds`` since the first epoch, as rank 0 sees it (every rank gets rank
        0's answer, so all of them stop after the same epoch)."""
        if self.max_seconds is None:
            return False
        late = time.perf_counter() - self.t_run > self.max_seconds
        if not broadcast_tensor(torch.tensor([float(late)], device=self.dev)).item():
            return False
        logger.warning(
            "stopping after epoch %d of %d: max_seconds=%s reached",
            epoch + 1,
            self.epochs,
            self.max_seconds,
        )
        return True


def _model_and_optimiser(
    encoder: Encoder, cfg: PretrainConfig, dev: torch.device, cl: bool, steps: int
) -> tuple[BarlowTwins, nn.Module, torch.optim.Optimizer, WarmupCosine]:
    """The encoder copy + projector (seeded; channels-last with ``cl``), its DDP wrapper, the
    optimiser and the schedule over ``steps`` steps per epoch."""
    torch.manual_seed(cfg.seed)
    model = BarlowTwins(copy.deepcopy(encoder), cfg.projector).to(dev)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    net = wrap_ddp(model, dev)
    opt = build_optimizer(
        [(model.named_parameters(), cfg.resolved_lr())],
        cfg.optimizer,
        cfg.resolved_weight_decay(),
        momentum=cfg.momentum,
        eta=cfg.eta,
    )
    sched = WarmupCosine(opt, cfg.epochs * steps, cfg.warmup_epochs * steps, cfg.final_lr_ratio)
    return model, net, opt, sched


def _finish(
    trained: Encoder,
    cfg: PretrainConfig,
    history: list[dict[str, Any]],
    out_dir: str | Path | None,
    metadata: dict[str, Any],
    dev: torch.device,
) -> PretrainResult:
    """Save the trained encoder (rank 0, with ``out_dir``), mark its weights, time the epochs."""
    weights_path = None
    if out_dir is not None and context().is_main:
        pretrain = {"method": "barlow_twins", **cfg.to_dict()}
        path = Path(out_dir) / ENCODER_FILE
        weights_path = save_encoder(path, trained, pretrain=pretrain, history=history, **metadata)
    barrier()
    _mark_weights(trained, weights_path, cfg.seed)
    return PretrainResult(
        encoder=trained,
        history=history,
        weights_path=weights_path,
        seconds_per_epoch=seconds_per_epoch(history),
        peak_memory_bytes=peak_memory(dev),
    )


def _mark_weights(encoder: Encoder, path: Path | None, seed: int) -> None:
    """Give the trained encoder's config a weights identity of its own (file hash when saved)."""
    if path is not None:
        identity = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    else:
        identity = f"barlow_twins:seed={seed}"
    encoder.config = dataclasses.replace(encoder.config, weights=identity)
