"""Extraction commits its cache every few batches, resumes after SIGKILL from the last commit,
and the ONNX runner's concurrent parts give the same rows as one run (issue 18, item 6)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from icbpl.features import _cache, _extract
from test_features import FakeSource, TinyEncoder
from test_features import _extract as extract

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def _rows_complete(folder: Path) -> list[int]:
    (sidecar,) = folder.glob("features-*.json")
    return list(json.loads(sidecar.read_text())["rows_complete"])


def test_commits_every_commit_rows_not_every_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_extract, "COMMIT_ROWS", 32)
    commits: list[int] = []
    real = _cache.RowCache.commit

    def counted(self: _cache.RowCache) -> None:
        commits.append(1)
        real(self)

    monkeypatch.setattr(_cache.RowCache, "commit", counted)
    got = extract(TinyEncoder(), FakeSource(100), cache_dir=tmp_path, batch_size=8)
    # creation, after rows 32, 64 and 96, and the final one; 13 batches of 8
    assert len(commits) == 5
    assert _rows_complete(tmp_path) == [100]
    fresh = extract(TinyEncoder(), FakeSource(100), batch_size=8)
    np.testing.assert_allclose(got.features, fresh.features, atol=1e-6)


_KILLED = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from icbpl.features import _backends, _extract
from test_features import FakeSource, TinyEncoder, _extract as extract
_extract.COMMIT_ROWS = 32
real, calls = _backends.TorchRunner.__call__, []
def killing(self, images):
    calls.append(1)
    if len(calls) == 7:  # after 6 batches of 8 rows: 48 written, 32 committed
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, images)
_backends.TorchRunner.__call__ = killing
extract(TinyEncoder(), FakeSource(100), cache_dir={cache!r}, batch_size=8)
"""


def test_sigkill_resumes_after_the_last_commit(tmp_path: Path) -> None:
    code = textwrap.dedent(_KILLED).format(tests=str(TESTS), cache=str(tmp_path))
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert _rows_complete(tmp_path) == [32]
    src = FakeSource(100)
    resumed = extract(TinyEncoder(), src, cache_dir=tmp_path, batch_size=8)
    assert min(src.loads) == 32 and not resumed.meta["cache_hit"]
    fresh = extract(TinyEncoder(), FakeSource(100), batch_size=8)
    np.testing.assert_allclose(resumed.features, fresh.features, atol=1e-6)


def test_onnx_parts_give_the_rows_of_one_run(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from icbpl.features._backends import MAX_PART, OnnxRunner

    enc = TinyEncoder().eval()
    x = torch.rand(45, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    one = OnnxRunner(enc, tmp_path / "tiny.onnx", 16, threads=1)
    four = OnnxRunner(enc, tmp_path / "tiny.onnx", 16, threads=4)
    assert four.threads == 4
    with torch.no_grad():
        ref = enc.encode(x)
    np.testing.assert_allclose(four(x).numpy(), one(x).numpy(), atol=1e-6)
    np.testing.assert_allclose(four(x).numpy(), ref.numpy(), atol=1e-4)
    assert four(x[:3]).shape == (3, 8)  # fewer than MIN_PART images: one part
    many = torch.rand(2 * MAX_PART + 5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    runs: list[int] = []
    real = one.session.run
    one.session = _Counting(real, runs)  # one thread, yet parts of at most MAX_PART images
    with torch.no_grad():
        np.testing.assert_allclose(one(many).numpy(), enc.encode(many).numpy(), atol=1e-4)
    assert len(runs) == 3 and max(runs) <= MAX_PART and sum(runs) == len(many)


class _Counting:
    """An ONNX session stand-in that records the images of each run."""

    def __init__(self, run: Any, sizes: list[int]) -> None:
        self._run, self.sizes = run, sizes

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.sizes.append(len(feeds["images"]))
        return self._run(names, feeds)
