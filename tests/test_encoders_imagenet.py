"""The packaged EfficientNet-Lite0 weights classify real images: proof that the key mapping and
the normalisation are right.

Tiny-ImageNet's 200 classes are ImageNet-1k synsets, so the encoder's features through the kept
ImageNet classifier must name the right class. Measured on these 40 validation images (the
first by file name) at 160 px: top-5 0.80 among the 200 Tiny-ImageNet classes (chance 0.025),
0.575 among all 1000 (chance 0.005); top-1 among the 200 drops from 0.60 to 0.40 with the
ImageNet mean/std instead of the inception-style 0.5/0.5 the weights were trained with.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import ImageNetInfo

from icbpl.encoders import Encoder, create_encoder

N_IMAGES = 40


@pytest.fixture
def tiny_imagenet(shared_data: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (N, 3, 64, 64) in [0, 1], ImageNet class ids (N,), the 200 ImageNet ids)."""
    path = shared_data / "tiny-imagenet-200-val.tar.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found (see ../shared/data/README.md)")
    files: dict[str, bytes] = {}
    with tarfile.open(path) as tar:  # one sequential pass: members are read in tar order
        for member in tar:
            if member.isfile() and member.name.endswith((".JPEG", ".txt")):
                f = tar.extractfile(member)
                if f is not None:
                    files[member.name.rsplit("/", 1)[-1]] = f.read()
    index = {wnid: i for i, wnid in enumerate(ImageNetInfo().label_names())}
    rows = sorted(
        line.split("\t")[:2] for line in files["val_annotations.txt"].decode().split("\n") if line
    )
    chosen = rows[:N_IMAGES]
    images = [np.array(Image.open(io.BytesIO(files[name])).convert("RGB")) for name, _ in chosen]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    y = torch.tensor([index[wnid] for _, wnid in chosen])
    allowed = torch.tensor(sorted(index[w] for w in files["wnids.txt"].decode().split()))
    return x, y, allowed


def _logits(encoder: Encoder, images: torch.Tensor) -> torch.Tensor:
    size = encoder.config.input_size
    x = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        return encoder.backbone.get_classifier()(encoder.encode(x))  # type: ignore[operator]


def _topk(logits: torch.Tensor, y: torch.Tensor, k: int) -> float:
    return float((logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).float().mean())


@pytest.mark.data
def test_efficientnet_lite0_classifies_tiny_imagenet(
    tiny_imagenet: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    x, y, allowed = tiny_imagenet
    enc = create_encoder("efficientnet_lite0", keep_classifier=True)
    assert enc.config.supervised and enc.config.input_size == 160
    logits = _logits(enc, x)
    assert logits.shape == (N_IMAGES, 1000)
    y200 = torch.searchsorted(allowed, y)
    top5_200 = _topk(logits[:, allowed], y200, 5)
    top5_1000 = _topk(logits, y, 5)
    assert top5_200 >= 0.6, f"top-5 among 200 classes {top5_200:.3f} (measured 0.80)"
    assert top5_1000 >= 0.4, f"top-5 among 1000 classes {top5_1000:.3f} (measured 0.575)"

    other = create_encoder(
        "efficientnet_lite0",
        keep_classifier=True,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )
    top1_ours = _topk(logits[:, allowed], y200, 1)
    top1_other = _topk(_logits(other, x)[:, allowed], y200, 1)
    assert top1_ours >= top1_other + 0.1, (top1_ours, top1_other)  # measured 0.60 vs 0.40
