"""Loaders on the real benchmark files of ../shared/data (skipped when they are absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from icbpl.data import load_dataset

pytestmark = [pytest.mark.data, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICBPL_CACHE", str(tmp_path_factory.getbasetemp() / "icbpl-cache"))


def _counts(labels: np.ndarray | None) -> list[int]:
    assert labels is not None
    return np.bincount(labels).tolist()


def test_cifar10_jpeg_copy_all(shared_data: Path) -> None:
    src = load_dataset("cifar10", split="all", root=shared_data)
    assert len(src) == 60_000 and not src.skipped
    assert src.class_names is not None and len(src.class_names) == 10
    assert _counts(src.labels) == [6000] * 10
    x = getattr(src, "as_array")()  # noqa: B009
    assert x.shape == (60_000, 32, 32, 3) and x.dtype == np.uint8
    assert 100 < float(x[:1000].mean()) < 150  # natural images, not zeros or noise
    assert len(load_dataset("cifar10", split="test", root=shared_data)) == 10_000  # cached


def test_mnist_npz(shared_data: Path) -> None:
    src = load_dataset("mnist", split="all", root=shared_data)
    assert len(src) == 70_000 and len(_counts(src.labels)) == 10
    assert src.load(0).shape == (3, 28, 28)


def test_fashion_mnist_idx(shared_data: Path) -> None:
    train = load_dataset("fashion-mnist", split="train", root=shared_data)
    assert _counts(train.labels) == [6000] * 10
    test = load_dataset("fashion-mnist", split="test", root=shared_data)
    assert _counts(test.labels) == [1000] * 10


def test_tiny_imagenet_val(shared_data: Path) -> None:
    src = load_dataset("tiny-imagenet", split="val", root=shared_data)
    assert len(src) == 10_000 and not src.skipped
    assert src.class_names is not None and len(src.class_names) == 200
    assert _counts(src.labels) == [50] * 200
    assert src.load(0).shape == (3, 64, 64)
