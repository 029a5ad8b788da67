"""Feature extraction, its memory-mapped cache, the ONNX backend and the device helpers.

Uses a tiny encoder and fake sources defined here, so every test runs in well under a second.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from icbpl.data import ArraySource
from icbpl.features import FeatureSet, extract_features, weights_digest
from icbpl.features.augment import BatchAugment, resize_batch
from icbpl.util.device import autocast_context, resolve_device, resolve_precision


@dataclass(frozen=True)
class TinyConfig:
    name: str = "tiny"
    mean: tuple[float, float, float] = (0.5, 0.4, 0.3)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    input_size: int = 16
    feature_dim: int = 8
    supervised: bool = False
    weights: str = "random"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TinyEncoder(nn.Module):
    """conv-bn-relu, global pool, linear: enough to exercise layouts, BN and the ONNX export."""

    def __init__(self, input_size: int = 16, seed: int = 0, nan: bool = False) -> None:
        super().__init__()
        self.config = TinyConfig(input_size=input_size)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
            self.bn = nn.BatchNorm2d(6)
            self.fc = nn.Linear(6, 8)
            self.bn.running_mean.uniform_(-0.2, 0.2)
        self.nan = nan

    def encode(self, images: Tensor) -> Tensor:
        mean = torch.tensor(self.config.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.config.std, device=images.device).view(1, 3, 1, 1)
        h = torch.relu(self.bn(self.conv((images - mean) / std)))
        out = self.fc(h.mean(dim=(2, 3)))
        return out * float("nan") if self.nan else out


class FakeSource:
    """Random uint8 images; counts loads and can fail at one index (a simulated crash)."""

    def __init__(self, n: int = 40, hw: tuple[int, int] = (12, 12), seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.images = [
            torch.from_numpy(rng.integers(0, 256, (3, *hw), dtype=np.uint8)) for _ in range(n)
        ]
        self.ids = [f"fake/{i:04d}" for i in range(n)]
        self.labels: np.ndarray | None = np.arange(n) % 3
        self.class_names = None
        self.skipped: list[tuple[str, str]] = []
        self.loads: list[int] = []
        self.fail_at: int | None = None
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> Tensor:
        if i == self.fail_at:
            raise RuntimeError(f"simulated crash at image {i}")
        self.loads.append(i)
        return self.images[i]

    def fingerprint(self) -> str:
        return f"fake-{self.seed}-{len(self)}"


def _extract(encoder: nn.Module, source: Any, **kwargs: Any) -> FeatureSet:
    kwargs = {"batch_size": 16, "progress": False, "num_workers": 0, **kwargs}
    return extract_features(encoder, source, **kwargs)


def _reference(encoder: TinyEncoder, source: FakeSource) -> np.ndarray:
    x = resize_batch(torch.stack(source.images), encoder.config.input_size)
    with torch.no_grad():
        return encoder.eval().encode(x).numpy()


def test_features_match_a_direct_forward_and_carry_ids() -> None:
    enc, src = TinyEncoder(), FakeSource()
    fs = _extract(enc, src, batch_size=7, num_workers=1)
    assert fs.features.shape == (40, 8) and fs.features.dtype == np.float32
    np.testing.assert_allclose(fs.features, _reference(enc, src), atol=1e-5)
    assert fs.ids == src.ids and fs.labels is src.labels and fs.views is None
    assert fs.meta["backend"] == "torch" and fs.meta["precision"] == "fp32"


def test_encoder_is_not_modified() -> None:
    enc = TinyEncoder().train()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    _extract(enc, FakeSource(8), channels_last=True)
    assert enc.training and enc.conv.weight.is_contiguous()
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)


def test_array_source_fast_path_equals_per_image_loads() -> None:
    src = FakeSource(20)
    array = np.stack([im.permute(1, 2, 0).numpy() for im in src.images])
    fast = _extract(TinyEncoder(), ArraySource(array))
    np.testing.assert_allclose(fast.features, _extract(TinyEncoder(), src).features, atol=1e-6)


def test_images_of_mixed_sizes() -> None:
    src = FakeSource(6)
    src.images[2] = torch.zeros(3, 30, 20, dtype=torch.uint8)
    fs = _extract(TinyEncoder(), src)
    assert fs.features.shape == (6, 8) and np.isfinite(fs.features).all()


def test_views_are_reproducible_and_independent_of_batch_size() -> None:
    enc, src = TinyEncoder(), FakeSource(70)
    a = _extract(enc, src, views=2, batch_size=32)
    b = _extract(enc, src, views=2, batch_size=64, num_workers=1)
    assert a.views is not None and b.views is not None and a.views.shape == (2, 70, 8)
    np.testing.assert_allclose(a.views, b.views, atol=1e-5)
    np.testing.assert_allclose(a.features, b.features, atol=1e-5)
    assert np.abs(a.views[0] - a.views[1]).max() > 1e-3
    assert np.abs(a.views[0] - a.features).max() > 1e-3
    c = _extract(enc, src, views=1, seed=1)
    assert c.views is not None and np.abs(c.views[0] - a.views[0]).max() > 1e-3


def test_cache_miss_then_hit(tmp_path: Path) -> None:
    enc, src = TinyEncoder(), FakeSource()
    first = _extract(enc, src, cache_dir=tmp_path, views=1)
    assert not first.meta["cache_hit"] and isinstance(first.features, np.memmap)
    src.loads.clear()
    second = _extract(enc, src, cache_dir=tmp_path, views=1)
    assert second.meta["cache_hit"] and src.loads == []
    np.testing.assert_array_equal(second.features, first.features)
    assert second.views is not None and first.views is not None
    np.testing.assert_array_equal(second.views, first.views)
    np.testing.assert_allclose(second.features, _reference(enc, src), atol=1e-5)


@pytest.mark.parametrize("views", [0, 2])
def test_resume_after_interruption(tmp_path: Path, views: int) -> None:
    enc, src = TinyEncoder(), FakeSource(100)
    src.fail_at = 75
    with pytest.raises(RuntimeError, match="simulated crash"):
        _extract(enc, src, cache_dir=tmp_path, views=views, batch_size=32)
    sidecar = json.loads(next(tmp_path.glob("features-*.json")).read_text())
    assert sidecar["rows_complete"] == [64]
    src.fail_at, src.loads = None, []
    resumed = _extract(enc, src, cache_dir=tmp_path, views=views, batch_size=32)
    assert min(src.loads) == 64 and not resumed.meta["cache_hit"]
    fresh = _extract(enc, FakeSource(100), views=views)
    np.testing.assert_allclose(resumed.features, fresh.features, atol=1e-5)
    if views:
        assert resumed.views is not None and fresh.views is not None
        np.testing.assert_allclose(resumed.views, fresh.views, atol=1e-5)


def test_views_cache_grows_and_keeps_done_views(tmp_path: Path) -> None:
    enc, src = TinyEncoder(), FakeSource(40)
    one = _extract(enc, src, cache_dir=tmp_path, views=1)
    two = _extract(enc, src, cache_dir=tmp_path, views=2)
    assert one.views is not None and two.views is not None and two.views.shape == (2, 40, 8)
    np.testing.assert_array_equal(two.views[0], one.views[0])
    again = _extract(enc, src, cache_dir=tmp_path, views=1)
    assert again.meta["cache_hit"] and again.views is not None and again.views.shape == (1, 40, 8)
    fresh = _extract(enc, src, views=2)
    assert fresh.views is not None
    np.testing.assert_allclose(two.views, fresh.views, atol=1e-5)


def test_cache_key_follows_weights_size_source_and_views(tmp_path: Path) -> None:
    def paths(enc: nn.Module, src: FakeSource, **kw: Any) -> tuple[str, str | None]:
        cache = _extract(enc, src, cache_dir=tmp_path, **kw).meta["cache"]
        return cache["features"], cache["views"]

    src = FakeSource(8)
    base_f, base_v = paths(TinyEncoder(), src, views=1)
    assert paths(TinyEncoder(), src, views=1) == (base_f, base_v)
    assert paths(TinyEncoder(seed=1), src, views=1)[0] != base_f  # other weights, same config
    assert paths(TinyEncoder(input_size=12), src)[0] != base_f
    assert paths(TinyEncoder(), FakeSource(8, seed=5))[0] != base_f
    f, v = paths(TinyEncoder(), src, views=1, seed=3)
    assert f == base_f and v != base_v
    f, v = paths(TinyEncoder(), src, views=1, augment=BatchAugment(16, blur_p=0.0))
    assert f == base_f and v != base_v
    assert weights_digest(TinyEncoder()) != weights_digest(TinyEncoder(seed=1))


@pytest.mark.parametrize("damage", ["sidecar", "npy"])
def test_corrupted_cache_is_rebuilt_with_a_warning(tmp_path: Path, damage: str) -> None:
    enc, src = TinyEncoder(), FakeSource(20)
    good = np.array(_extract(enc, src, cache_dir=tmp_path).features)
    if damage == "sidecar":
        next(tmp_path.glob("features-*.json")).write_text("{not json")
    else:
        npy = next(tmp_path.glob("features-*.npy"))
        npy.write_bytes(npy.read_bytes()[:200])
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        rebuilt = _extract(enc, src, cache_dir=tmp_path)
    assert not rebuilt.meta["cache_hit"]
    np.testing.assert_array_equal(rebuilt.features, good)


def test_nan_features_raise() -> None:
    with pytest.raises(RuntimeError, match="NaN"):
        _extract(TinyEncoder(nan=True), FakeSource(4))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"views": -1}, "views"),
        ({"batch_size": 0}, "batch_size"),
        ({"backend": "tensorrt"}, "backend"),
        ({"views": 1, "augment": BatchAugment(32)}, "augment.size"),
        ({"backend": "onnx", "precision": "bf16"}, "fp32 on the CPU"),
        ({"precision": "fp16"}, "precision"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _extract(TinyEncoder(), FakeSource(4), **kwargs)


def test_onnx_backend_matches_torch(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    enc, src = TinyEncoder(), FakeSource(20)
    got = _extract(enc, src, backend="onnx", cache_dir=tmp_path / "a", views=1)
    ref = _extract(enc, src, backend="torch", views=1)
    assert got.meta["backend"] == "onnx" and list((tmp_path / "a" / "onnx").glob("*.onnx"))
    assert got.views is not None and ref.views is not None
    np.testing.assert_allclose(got.features, ref.features, atol=1e-4)
    np.testing.assert_allclose(got.views, ref.views, atol=1e-4)


def test_onnx_export_is_cached_and_a_broken_one_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from icbpl.features import _backends

    exports: list[Path] = []
    real_export = _backends.export_onnx
    monkeypatch.setattr(
        _backends, "export_onnx", lambda e, p, s: (exports.append(p), real_export(e, p, s))
    )
    enc, src = TinyEncoder(), FakeSource(8)
    first = _extract(enc, src, backend="onnx", cache_dir=tmp_path)
    _extract(enc, FakeSource(8, seed=1), backend="onnx", cache_dir=tmp_path)
    assert len(exports) == 1
    (onnx_file,) = (tmp_path / "onnx").glob("*.onnx")
    onnx_file.write_bytes(b"not an onnx model")
    with pytest.warns(RuntimeWarning, match="exporting again"):
        again = _extract(enc, FakeSource(8, seed=2), backend="onnx", cache_dir=tmp_path)
    assert len(exports) == 2 and again.meta["backend"] == "onnx"
    assert first.meta["backend"] == "onnx"


def test_bf16_on_cpu_stays_close_to_fp32() -> None:
    enc, src = TinyEncoder(), FakeSource(8)
    fp32 = _extract(enc, src, precision="fp32").features
    bf16 = _extract(enc, src, precision="bf16", backend="torch")
    assert bf16.meta["precision"] == "bf16"
    cos = (fp32 * bf16.features).sum(1) / np.linalg.norm(fp32, axis=1)
    cos /= np.linalg.norm(bf16.features, axis=1)
    assert cos.min() > 0.99


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="not a device name"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="not supported"):
        resolve_device("meta")
    with pytest.raises(RuntimeError, match="cuda:99"):
        resolve_device("cuda:99")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_precision_and_autocast() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision(cpu, "auto") == "fp32" and resolve_precision(cpu, "fp32") == "fp32"
    a, b = torch.rand(4, 4), torch.rand(4, 4)
    with autocast_context(cpu, "fp32") as used:
        assert used == "fp32" and (a @ b).dtype == torch.float32
    with autocast_context("cpu", "bf16") as used:
        assert used == "bf16" and (a @ b).dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_extraction_bf16_auto() -> None:
    enc, src = TinyEncoder(), FakeSource(40)
    assert resolve_device("cuda").type == "cuda"
    fs = _extract(enc, src, device="cuda", views=1)
    assert fs.meta["precision"] == "bf16" and fs.meta["backend"] == "torch"
    ref = _reference(enc, src)
    cos = (
        (fs.features * ref).sum(1)
        / np.linalg.norm(fs.features, axis=1)
        / np.linalg.norm(ref, axis=1)
    )
    assert cos.min() > 0.99
    cpu_views = _extract(enc, src, views=1, precision="fp32").views
    gpu_views = _extract(enc, src, device="cuda", views=1, precision="fp32").views
    assert cpu_views is not None and gpu_views is not None
    np.testing.assert_allclose(gpu_views, cpu_views, atol=1e-3)


def test_load_batch_from_a_read_only_array_does_not_warn() -> None:
    """Memory-mapped image arrays are read-only; torch warns on those unless they are copied."""
    import warnings

    from icbpl.features._loading import load_batch

    images = np.arange(4 * 8 * 8 * 3, dtype=np.uint8).reshape(4, 8, 8, 3)
    images.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = load_batch(None, images, 1, 3, 8)  # type: ignore[arg-type]
    assert batch.shape == (2, 3, 8, 8)
    np.testing.assert_allclose(batch.numpy(), images[1:3].transpose(0, 3, 1, 2) / 255.0, atol=1e-6)
