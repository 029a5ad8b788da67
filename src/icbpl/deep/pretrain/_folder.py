"""Encoder folders: what ``icbpl pretrain --out DIR`` writes and ``--weights DIR`` reads.

Layout of an encoder folder::

    encoder.safetensors   the encoder's state dict (safetensors, never a pickle)
    encoder.json          registry name, EncoderConfig, training settings and history, and
                          ``"create"``: the arguments that rebuild the encoder
                          (``create_encoder(create["encoder"], weights=<encoder.safetensors>,
                          **create["options"])``)
    checkpoint/           the training state of each finished epoch (``--resume``)
    log.txt               the log of the command

A results folder of ``icbpl cluster --finetune last2|all`` holds the fine-tuned encoder in the
same layout under ``encoder/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from icbpl.util.checkpoint import save_weights

__all__ = [
    "ENCODER_FILE",
    "EncoderFolder",
    "encoder_metadata",
    "is_encoder_folder",
    "read_encoder_folder",
    "save_encoder",
]

ENCODER_FILE = "encoder.safetensors"


@dataclass(frozen=True)
class EncoderFolder:
    """A saved encoder: its weights file, registry name, factory options and description.

    Attributes:
        folder: the encoder folder.
        weights: ``folder / "encoder.safetensors"``.
        encoder: registry name to build it with (`icbpl.encoders.create_encoder`).
        options: factory options besides ``weights`` (e.g. ``{"input_size": 64}``).
        meta: the whole ``encoder.json``.
    """

    folder: Path
    weights: Path
    encoder: str
    options: dict[str, Any]
    meta: dict[str, Any]

    @property
    def input_size(self) -> int | None:
        """The ``input_size`` option, or ``None`` when the encoder's default is used."""
        value = self.options.get("input_size")
        return None if value is None else int(value)


def encoder_metadata(encoder: nn.Module, **extra: Any) -> dict[str, Any]:
    """JSON description of an encoder's weights: registry name, architecture, config, extras."""
    from icbpl.encoders.cifar_resnet import architecture_of

    config = getattr(encoder, "config", None)
    cfg: dict[str, Any] = {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        cfg = asdict(config)
    meta: dict[str, Any] = {"encoder": cfg.get("name"), "config": cfg}
    arch = architecture_of(encoder)
    if arch is not None:
        meta["architecture"] = arch
    meta.update(extra)
    return meta


def save_encoder(path: str | Path, encoder: nn.Module, **extra: Any) -> Path:
    """Write ``encoder``'s weights to ``path`` (``.safetensors``) and its
    :func:`encoder_metadata` with ``extra`` to the ``.json`` beside it."""
    return save_weights(path, encoder.state_dict(), encoder_metadata(encoder, **extra))


def is_encoder_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder holding ``encoder.safetensors``."""
    p = Path(path).expanduser()
    return p.is_dir() and (p / ENCODER_FILE).is_file()


def read_encoder_folder(path: str | os.PathLike[str]) -> EncoderFolder:
    """Read the encoder folder at ``path`` (see the module notes).

    Raises:
        FileNotFoundError: ``path`` holds no ``encoder.safetensors``.
        ValueError: ``encoder.json`` is missing, unreadable or names no encoder.
    """
    folder = Path(path).expanduser()
    weights = folder / ENCODER_FILE
    if not weights.is_file():
        hint = ""
        if (folder / "checkpoint").is_dir():
            hint = " (it holds a checkpoint: finish the run with `icbpl pretrain ... --resume`)"
        raise FileNotFoundError(
            f"{folder} is not an encoder folder: {ENCODER_FILE} is missing{hint}; pass the --out "
            "folder of `icbpl pretrain`, or a weights file"
        )
    side = weights.with_suffix(".json")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{side} cannot be read ({err}); the encoder folder is broken") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{side} should hold a JSON object")
    create = meta.get("create")
    create = create if isinstance(create, dict) else {}
    name = create.get("encoder") or meta.get("encoder")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{side} names no encoder (no 'encoder' entry)")
    options = create.get("options")
    options = dict(options) if isinstance(options, dict) else {}
    return EncoderFolder(folder, weights, name, options, meta)
