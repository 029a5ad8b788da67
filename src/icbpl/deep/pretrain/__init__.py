"""Self-supervised pre-training of encoders with Barlow Twins (Zbontar et al., ICML 2021).

The paper's ICBPL pipeline starts from a Barlow Twins ResNet-50; :func:`pretrain_barlow_twins`
trains such an encoder from scratch (or continues one) on the images to be clustered, and saves
it as safetensors + JSON so that ``create_encoder(name, weights=path)`` loads it; an encoder
folder (:func:`read_encoder_folder`) is what ``icbpl pretrain --out DIR`` writes.
"""

from __future__ import annotations

from icbpl.deep.pretrain._folder import (
    ENCODER_FILE,
    EncoderFolder,
    encoder_metadata,
    is_encoder_folder,
    read_encoder_folder,
    save_encoder,
)
from icbpl.deep.pretrain._loop import PretrainConfig, PretrainResult, pretrain_barlow_twins
from icbpl.deep.pretrain._loss import BarlowTwins, barlow_twins_loss, make_projector
from icbpl.deep.pretrain._optim import LARS, WarmupCosine, build_optimizer
from icbpl.deep.runtime import images_as_tensor

__all__ = [
    "ENCODER_FILE",
    "LARS",
    "BarlowTwins",
    "EncoderFolder",
    "PretrainConfig",
    "PretrainResult",
    "WarmupCosine",
    "barlow_twins_loss",
    "build_optimizer",
    "encoder_metadata",
    "images_as_tensor",
    "is_encoder_folder",
    "make_projector",
    "pretrain_barlow_twins",
    "read_encoder_folder",
    "save_encoder",
]
