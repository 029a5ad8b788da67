"""`ClusterConfig`: everything that determines a clustering run, as written to config.json."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icbpl.model.params import INITS, drop_retired, validate_params
from icbpl.util.plain import plain_dict

FINETUNE = ("frozen", "last2", "all")  # the same as icbpl.deep.finetune.STRATEGIES (a test checks)

#: ClusterConfig fields that are `icbpl.model.estimator.ICBPL` parameters, by their ICBPL name: they
#: are checked against ICBPL's one constraint table (`icbpl.model.params.PARAMETER_CONSTRAINTS`).
ICBPL_FIELDS = {
    "latent_dim": "latent_dim",
    "hidden": "hidden",
    "batch_size": "train_batch_size",
    "lr": "lr",
    "weight_decay": "weight_decay",
    "loss_weights": "loss_weights",
    "distance": "distance",
    "n_neighbours": "n_neighbours",
    "refresh_every": "refresh_every",
    "n_heads": "n_heads",
    "init": "init",
    "patience": "patience",
    "random_state": "seed",
}

__all__ = ["CONFIG_FORMAT", "CONFIG_VERSION", "INITS", "ClusterConfig", "PipelineError"]

CONFIG_FORMAT = "icbpl.cluster"
CONFIG_VERSION = 1


class PipelineError(ValueError):
    """A configuration or input the pipeline cannot run with; the message says how to fix it."""


AUTO_STEPS = 2000
"""Training steps that ``epochs=None`` aims for (:meth:`ClusterConfig.resolved_epochs`)."""
AUTO_EPOCHS = (20, 60)
"""Bounds of the automatic number of epochs."""


@dataclass(frozen=True)
class ClusterConfig:
    """Everything that determines a clustering run (written to ``config.json``).

    Attributes:
        path: folder of images, or the root / archive of ``dataset``.
        k: number of clusters, or ``"auto"``: chosen without labels by
            `icbpl.model.choose_k.choose_k` (its default criterion) from ``k_range``.
        k_range: ``(lo, hi)``, the candidates ``lo..hi`` (both included) of ``k="auto"``, capped
            below the number of images; ignored for an integer ``k``.
        dataset: a name from `icbpl.data.list_datasets` (then ``path`` is its root), or ``None``.
        split: the dataset split (or a sub-folder of a plain folder); ``None``: the default.
        encoder: registry name (`icbpl.encoders.list_encoders`).
        weights: ``None`` (the encoder's default weights), ``"random"`` or a checkpoint file.
        input_size: encoder input side in pixels (``None``: the encoder's default).
        views: augmented views per image for the augmentation loss (0: none).
        epochs: training epochs of the head; ``None`` (default): :meth:`resolved_epochs`, enough
            epochs for about 2,000 training steps, between 20 and 60.
        batch_size: images per forward pass of the encoder.
        device: ``"auto"``, ``"cpu"``, ``"cuda[:i]"`` or ``"mps"`` (extraction and training).
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (extraction).
        cache_dir: feature cache folder; ``None``: ``<icbpl cache>/features``; ``""``: no cache.
        seed: seed of the views, random encoder weights and training.
        latent_dim, hidden, train_batch_size, lr, loss_weights, n_neighbours, refresh_every,
        distance, weight_decay, init, n_heads, patience: parameters of
            `icbpl.model.estimator.ICBPL` (``train_batch_size`` is its ``batch_size``), with its
            constraints and defaults (`ICBPL_FIELDS`).
        include_hidden: also read names starting with ``"."`` in a folder (skipped and listed
            by default).
        finetune: ``"frozen"`` (default): the head is trained on cached features of a fixed
            encoder; ``"last2"`` / ``"all"``: the encoder's last two stages / all its layers are
            trained with the head (`icbpl.deep.finetune.finetune`, paper section 3.4; views made on
            the fly, neighbours re-mined from the current encoder; needs an integer ``k`` and the
            defaults of ``init`` and ``n_heads``; the head starts at random). The fine-tuned
            encoder is saved in the results folder (``encoder/``).
        encoder_lr: learning rate of the trained encoder parts when fine-tuning.
    """

    path: str
    k: int | str
    k_range: tuple[int, int] = (2, 50)
    dataset: str | None = None
    split: str | None = None
    encoder: str = "efficientnet_lite2"
    weights: str | None = None
    input_size: int | None = None
    views: int = 1
    epochs: int | None = None
    batch_size: int = 256
    device: str = "auto"
    precision: str = "auto"
    cache_dir: str | None = None
    seed: int = 0
    latent_dim: int = 100
    hidden: tuple[int, ...] = (512,)
    train_batch_size: int = 100
    lr: float = 1e-3
    loss_weights: tuple[float, ...] = (8.0, 2.0, 2.0, 1.0)
    n_neighbours: int = 4
    refresh_every: int = 30
    distance: str = "cosine"
    weight_decay: float = 0.0
    init: str = "auto"
    include_hidden: bool = False
    n_heads: int = 1
    patience: int = 10
    finetune: str = "frozen"
    encoder_lr: float = 1e-4

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "k_range", tuple(self.k_range))
        object.__setattr__(self, "loss_weights", tuple(float(w) for w in self.loss_weights))

    def validate(self) -> None:
        """Raise :class:`PipelineError` for values no run can use (before any work is done)."""
        if not (self.k == "auto" or (isinstance(self.k, int) and not isinstance(self.k, bool))):
            raise PipelineError(f"k={self.k!r} should be an integer >= 2 or 'auto'")
        if isinstance(self.k, int) and self.k < 2:
            raise PipelineError(f"k={self.k} should be >= 2 clusters")
        lo_hi = self.k_range
        if (
            len(lo_hi) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) for v in lo_hi)
            or not 2 <= lo_hi[0] < lo_hi[1]
        ):
            raise PipelineError(
                f"k_range={lo_hi!r} should be two integers (lo, hi) with 2 <= lo < hi, e.g. (2, 50)"
            )
        checks = {
            "views": (self.views, 0),
            "epochs": (1 if self.epochs is None else self.epochs, 1),
            "batch_size": (self.batch_size, 1),
        }
        for name, (value, low) in checks.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise PipelineError(f"{name}={value!r} should be an integer >= {low}")
        try:
            validate_params(self.model_params(), complete=False, names=ICBPL_FIELDS)
        except ValueError as err:
            raise PipelineError(str(err)) from None
        if self.input_size is not None and (
            isinstance(self.input_size, bool) or not isinstance(self.input_size, int)
        ):
            raise PipelineError(f"input_size={self.input_size!r} should be an integer or None")
        if self.input_size is not None and self.input_size < 8:
            raise PipelineError(f"input_size={self.input_size} should be >= 8 pixels")
        if not isinstance(self.include_hidden, bool):
            raise PipelineError(f"include_hidden={self.include_hidden!r} should be true or false")
        self._validate_finetune()
        w = self.weights
        if w not in (None, "random") and not str(w).startswith(("http://", "https://")):
            if not Path(str(w)).expanduser().is_file():
                raise PipelineError(
                    f"weights file {w} does not exist; pass the path of a checkpoint file, "
                    "'random', or leave the weights out for the encoder's default weights"
                )

    def _validate_finetune(self) -> None:
        if self.finetune not in FINETUNE:
            raise PipelineError(
                f"finetune={self.finetune!r} should be one of {', '.join(FINETUNE)}"
            )
        if not self.encoder_lr > 0:
            raise PipelineError(f"encoder_lr={self.encoder_lr} should be > 0")
        if self.finetune == "frozen":
            return
        defaults = {"init": ("random", "kmeans", "auto"), "n_heads": (1,)}
        changed = [
            f"{key}={getattr(self, key)!r}"
            for key, allowed in defaults.items()
            if getattr(self, key) not in allowed
        ]
        if self.k == "auto":
            changed.append("k='auto'")
        if self.views < 1:
            changed.append(f"views={self.views}")
        if changed:
            raise PipelineError(
                f"finetune={self.finetune!r} does not support {', '.join(changed)}: it trains one "
                "randomly started head with at least one view and an integer k; drop those "
                "options or use finetune='frozen'"
            )

    def model_params(self, **run: Any) -> dict[str, Any]:
        """The `icbpl.model.estimator.ICBPL` parameters this configuration sets, by their ICBPL
        names (`ICBPL_FIELDS`), with ``run``'s (``n_clusters``, ``epochs`` ...) added:
        ``ICBPL(**config.model_params(n_clusters=k, ...))``."""
        return {name: getattr(self, field) for name, field in ICBPL_FIELDS.items()} | run

    def resolved_epochs(self, n_images: int) -> int:
        """Training epochs for ``n_images`` images: ``epochs``, or (``epochs=None``)
        ``ceil(AUTO_STEPS / steps_per_epoch)`` clipped to ``AUTO_EPOCHS``, where
        ``steps_per_epoch = ceil(n_images / train_batch_size)``."""
        if self.epochs is not None:
            return int(self.epochs)
        steps = max(1, math.ceil(max(int(n_images), 1) / self.train_batch_size))
        lo, hi = AUTO_EPOCHS
        return int(min(hi, max(lo, math.ceil(AUTO_STEPS / steps))))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (lists for tuples)."""
        return plain_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they would be ignored)."""
        try:
            data = drop_retired(data, where="configuration")
        except ValueError as err:
            raise PipelineError(str(err)) from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PipelineError(
                f"unknown configuration key(s) {unknown}; known keys: {sorted(known)}"
            )
        missing = [k for k in ("path", "k") if k not in data]
        if missing:
            raise PipelineError(f"configuration lacks {missing}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ClusterConfig:
        """Read the configuration of a ``config.json`` written by :func:`run_cluster`.

        ``path`` may also be the results folder holding it.
        """
        p = Path(path)
        if p.is_dir():
            p = p / "config.json"
        if not p.is_file():
            raise PipelineError(
                f"{p} not found; pass the config.json of a results folder of `icbpl cluster`"
            )
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise PipelineError(f"{p} is not valid JSON: {err}") from None
        if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
            raise PipelineError(f"{p} is not an icbpl cluster configuration (format mismatch)")
        if data.get("version") != CONFIG_VERSION:
            raise PipelineError(
                f"{p} has version {data.get('version')}; this icbpl reads {CONFIG_VERSION}"
            )
        return cls.from_dict(dict(data["config"]))
