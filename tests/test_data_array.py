"""ArraySource: layouts, dtypes, labels, the as_array fast path and fingerprints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icbpl.data import ArraySource, DataError, ImageSource, summarize


def _rgb(n: int = 3, h: int = 4, w: int = 5) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_nhwc_uint8_is_kept_without_copy() -> None:
    x = _rgb()
    src = ArraySource(x)
    assert isinstance(src, ImageSource)
    assert src.as_array() is x
    assert src.ids == ["array/000000", "array/000001", "array/000002"]
    img = src.load(1)
    assert img.dtype == torch.uint8 and img.shape == (3, 4, 5)
    assert np.array_equal(img.numpy(), x[1].transpose(2, 0, 1))
    img[:] = 0  # a copy: the source is untouched
    assert np.array_equal(src.load(1).numpy(), x[1].transpose(2, 0, 1))
    assert src.load(-1).shape == (3, 4, 5)
    with pytest.raises(IndexError):
        src.load(3)


def test_layouts_and_dtypes_agree() -> None:
    x = _rgb()
    want = ArraySource(x).as_array()
    assert np.array_equal(ArraySource(x.transpose(0, 3, 1, 2)).as_array(), want)
    assert np.array_equal(ArraySource(x.astype(np.float32) / 255).as_array(), want)
    assert np.array_equal(ArraySource(x.astype(np.int64)).as_array(), want)
    grey = x[..., 0]
    out = ArraySource(grey).as_array()
    assert out.shape == (3, 4, 5, 3) and (out == grey[..., None]).all()
    assert np.array_equal(ArraySource(grey[:, None]).as_array(), out)  # (N, 1, H, W)
    ambiguous = _rgb(2, 3, 3).transpose(0, 3, 1, 2)  # (2, 3, 3, 3)
    assert ArraySource(ambiguous, layout="NCHW").as_array().shape == (2, 3, 3, 3)


def test_rgba_is_composited_on_white() -> None:
    x = np.zeros((1, 1, 2, 4), np.uint8)
    x[0, 0, 0] = (0, 0, 0, 0)
    x[0, 0, 1] = (10, 20, 30, 255)
    assert ArraySource(x).as_array()[0, 0].tolist() == [[255, 255, 255], [10, 20, 30]]


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.full((1, 2, 2, 3), 2.0, np.float32), r"should lie in \[0, 1\]"),
        (np.full((1, 2, 2, 3), np.nan, np.float32), "NaN"),
        (np.full((1, 2, 2, 3), 300, np.int16), r"\[0, 255\]"),
        (np.zeros((2, 2), np.uint8), "should have shape"),
        (np.zeros((1, 7, 8, 9), np.uint8), "channel axis"),
    ],
)
def test_bad_arrays_are_rejected_with_reason(images: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        ArraySource(images)


def test_labels_and_names_are_checked() -> None:
    x = _rgb()
    src = ArraySource(x, [0, 1, 1], class_names=["a", "b"], ids=["p", "q", "r"])
    assert src.labels is not None and src.labels.dtype == np.int64
    assert src.ids == ["p", "q", "r"]
    assert "3 images in 2 classes" in summarize(src)
    with pytest.raises(DataError, match="shape"):
        ArraySource(x, [0, 1])
    with pytest.raises(DataError, match=">= 0"):
        ArraySource(x, [0, -1, 1])
    with pytest.raises(DataError, match="class_names"):
        ArraySource(x, [0, 1, 2], class_names=["a", "b"])
    with pytest.raises(DataError, match="ids"):
        ArraySource(x, ids=["only one"])


def test_fingerprint_follows_pixels() -> None:
    x = _rgb()
    fp = ArraySource(x).fingerprint()
    assert ArraySource(x.copy()).fingerprint() == fp
    y = x.copy()
    y[0, 0, 0, 0] ^= 1
    assert ArraySource(y).fingerprint() != fp
    assert ArraySource(x, fingerprint="given").fingerprint() == "given"
