"""Issue 19, items 4 and 9: the feature cache is verified, repaired and resumed exactly.

Chunk checksums catch rows changed on disk (NaN or plausible values) and only those chunks are
re-extracted, with a warning naming the cache file; a cached ONNX export is checked once per
cache key; ``icbpl cache info|clear``; an interrupt at any batch resumes from the rows written.
"""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import numpy as np
import pytest

from icbpl.cli import main
from icbpl.features import _backends, _cache, cache_entries
from test_features import FakeSource, TinyEncoder, _extract

CHUNK = 32


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cache, "CHUNK_ROWS", CHUNK)


def _npy(folder: Path, kind: str) -> Path:
    (path,) = folder.glob(f"{kind}-*.npy")
    return path


@pytest.mark.parametrize("kind", ["features", "views"])
@pytest.mark.parametrize("poison", ["nan", "plausible"])
def test_corrupted_rows_are_detected_and_only_their_chunk_redone(
    tmp_path: Path, kind: str, poison: str
) -> None:
    enc = TinyEncoder()
    clean = _extract(enc, FakeSource(100), cache_dir=tmp_path, views=1)
    expected = np.array(clean.features if kind == "features" else clean.views)
    path = _npy(tmp_path, kind)
    data = np.load(path, mmap_mode="r+")
    rows = data[40:45] if kind == "features" else data[0, 40:45]
    rows[:] = np.nan if poison == "nan" else rows[::-1] * 1.01  # same scale, other values
    data.flush()
    del data, rows
    src = FakeSource(100)
    with pytest.warns(RuntimeWarning, match=f"feature cache {path}: rows 32:64"):
        again = _extract(enc, src, cache_dir=tmp_path, views=1)
    assert sorted(set(src.loads)) == list(range(32, 64))  # only the failed chunk
    got = again.features if kind == "features" else again.views
    np.testing.assert_allclose(got, expected, atol=1e-6)
    src.loads.clear()
    _extract(enc, src, cache_dir=tmp_path, views=1)  # repaired: a clean hit
    assert src.loads == []


def test_repair_gives_the_same_assignments_as_a_clean_run(tmp_path: Path) -> None:
    from icbpl.model.estimator import ICBPL

    enc = TinyEncoder()
    clean = np.array(_extract(enc, FakeSource(90), cache_dir=tmp_path).features)
    data = np.load(_npy(tmp_path, "features"), mmap_mode="r+")
    data[70:80] = data[0:10]  # plausible rows: other images' features
    data.flush()
    del data
    with pytest.warns(RuntimeWarning, match="fail their checksum"):
        repaired = np.array(_extract(enc, FakeSource(90), cache_dir=tmp_path).features)
    params = {"n_clusters": 3, "epochs": 3, "batch_size": 30, "latent_dim": 8, "hidden": (16,)}
    a = ICBPL(**params).fit_predict(clean)
    b = ICBPL(**params).fit_predict(repaired)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("batch", "during"), [(0, "views"), (0, "features"), (1, "views"), (3, "views")]
)
def test_interrupt_at_any_batch_resumes_from_the_rows_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int, during: str
) -> None:
    import json

    enc = TinyEncoder()
    calls: list[int] = []
    real = _backends.TorchRunner.__call__
    stop = 2 * batch + (2 if during == "views" else 1)  # per batch of 32: features, then views

    def interrupted(self, images):  # type: ignore[no-untyped-def]
        calls.append(len(images))
        if len(calls) == stop:
            raise KeyboardInterrupt
        return real(self, images)

    monkeypatch.setattr(_backends.TorchRunner, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _extract(enc, FakeSource(100), cache_dir=tmp_path, views=1, batch_size=32)
    features_done = min(100, 32 * (batch + (during == "views")))
    sidecar = json.loads(_npy(tmp_path, "features").with_suffix(".json").read_text())
    assert sidecar["rows_complete"] == [features_done]
    monkeypatch.setattr(_backends.TorchRunner, "__call__", real)
    src = FakeSource(100)
    resumed = _extract(enc, src, cache_dir=tmp_path, views=1, batch_size=32)
    assert min(src.loads) == 32 * batch  # nothing before the interrupted batch is redone
    fresh = _extract(enc, FakeSource(100), views=1, batch_size=32)
    np.testing.assert_allclose(resumed.features, fresh.features, atol=1e-6)
    assert resumed.views is not None and fresh.views is not None
    np.testing.assert_allclose(resumed.views, fresh.views, atol=1e-6)


def test_resuming_is_said_on_screen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_cli import FAST, _write_images

    images = tmp_path / "img"
    _write_images(images, seed=0, per_class=12)
    calls = {"n": 0}
    real = _backends.TorchRunner.__call__

    def first_batch_then_stop(self, images):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:  # the first batch's views: its features are written
            raise KeyboardInterrupt
        return real(self, images)

    argv = ["cluster", images, "--k", "3", "--cache-dir", tmp_path / "c", "--batch-size", "8"]
    argv += [a for a in FAST if a != "--quiet"]
    monkeypatch.setattr(_backends.TorchRunner, "__call__", first_batch_then_stop)
    code, err = _main([*argv, "--out", tmp_path / "o"])
    assert code == 130 and "previous contents" in err
    monkeypatch.setattr(_backends.TorchRunner, "__call__", real)
    code, err = _main([*argv, "--out", tmp_path / "o"])
    assert code == 0, err
    assert (
        "resuming feature extraction: rows already in the cache: features 32/36, view 0 0/36" in err
    ), err


def _main(argv: list[object]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


def test_cached_onnx_export_is_verified_once_per_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    checks: list[int] = []
    real = _backends.OnnxRunner._verify

    def counted(self, encoder, size):  # type: ignore[no-untyped-def]
        checks.append(size)
        return real(self, encoder, size)

    monkeypatch.setattr(_backends.OnnxRunner, "_verify", counted)
    enc = TinyEncoder()
    _extract(enc, FakeSource(8), backend="onnx", cache_dir=tmp_path)
    _extract(enc, FakeSource(8, seed=1), backend="onnx", cache_dir=tmp_path)
    assert len(checks) == 1  # verified when exported, trusted while unchanged
    (marker,) = (tmp_path / "onnx").glob("*.verified.json")
    marker.unlink()  # e.g. an export copied in from elsewhere
    _extract(enc, FakeSource(8, seed=2), backend="onnx", cache_dir=tmp_path)
    assert len(checks) == 2 and marker.is_file()
    other = TinyEncoder(seed=1)  # a wrong export for this key is caught and redone
    (onnx_file,) = (tmp_path / "onnx").glob("*.onnx")
    _backends.export_onnx(other, onnx_file, 16)
    with pytest.warns(RuntimeWarning, match="disagrees with PyTorch"):
        _extract(enc, FakeSource(8, seed=3), backend="onnx", cache_dir=tmp_path)
    assert len(checks) == 4  # the cached one failed, the new export passed


def test_cache_info_and_clear(tmp_path: Path) -> None:
    _extract(TinyEncoder(), FakeSource(40), cache_dir=tmp_path, views=1)
    (tmp_path / "keep.txt").write_text("not icbpl's")
    assert sorted(e.kind for e in cache_entries(tmp_path)) == ["features", "views"]
    code, out = _stdout(["cache", "info", "--cache-dir", tmp_path])
    assert code == 0 and "features-" in out and "rows 40/40" in out and "2 entries" in out
    code, out = _stdout(["cache", "clear", "--cache-dir", tmp_path])
    assert code == 0 and "removed 4 file(s)" in out
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def _stdout(argv: list[object]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])
    return code, out.getvalue()


def test_assignments_of_a_cli_run_survive_a_corrupted_cache(tmp_path: Path) -> None:
    from test_cli import FAST, _write_images

    images = tmp_path / "img"
    _write_images(images, seed=0, per_class=5)
    base = ["cluster", images, "--k", "3", "--cache-dir", tmp_path / "c", *FAST]
    assert _main([*base, "--out", tmp_path / "a"])[0] == 0
    for path in (tmp_path / "c").glob("*.npy"):
        data = np.load(path, mmap_mode="r+")
        data[..., 3, :] = np.nan
        data.flush()
        del data
    with pytest.warns(RuntimeWarning, match="fail their checksum"):
        assert _main([*base, "--out", tmp_path / "b"])[0] == 0

    def clusters(folder: Path) -> list[str]:
        with (folder / "assignments.csv").open(newline="") as f:
            return [r["cluster"] for r in csv.DictReader(f)]

    assert clusters(tmp_path / "a") == clusters(tmp_path / "b")
