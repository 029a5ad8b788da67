"""Training loop: early stopping on the label-free score, thread policy, memory-mapped input."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from icbpl.core.pedcc import make_pedcc
from icbpl.model.training import SMALL_BATCH, TrainConfig, train_head, train_threads
from icbpl.util.device import cpu_threads


def _blobs(n: int = 300, d: int = 12, k: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 4
    return (centres[rng.integers(0, k, n)] + rng.standard_normal((n, d))).astype(np.float32)


def _train(x: np.ndarray | torch.Tensor, **kw: object) -> object:
    cfg = TrainConfig(n_clusters=3, latent_dim=4, hidden=(16,), batch_size=50, **kw)  # type: ignore[arg-type]
    c = torch.from_numpy(make_pedcc(3, 4)).float()
    xt = torch.as_tensor(x)
    return train_head(xt, c, cfg, views=xt[None] + 0.01)


def test_patience_stops_after_that_many_epochs_without_a_better_score() -> None:
    x = _blobs()
    full = _train(x, epochs=12)
    stopped = _train(x, epochs=12, patience=2)
    hist = stopped.history  # type: ignore[attr-defined]
    best = stopped.best_epoch  # type: ignore[attr-defined]
    # the same epochs up to the stop (same seed), and the stop is `patience` epochs after the best
    assert [r.score for r in hist] == [r.score for r in full.history[: len(hist)]]  # type: ignore[attr-defined]
    scores = [r.score for r in full.history]  # type: ignore[attr-defined]
    assert best == int(np.argmax(scores[: len(hist)])) + 1
    if len(hist) < 12:
        assert len(hist) - best == 2
    with pytest.raises(ValueError, match="patience=-1 should be >= 0"):
        _train(x, epochs=1, patience=-1)


def test_thread_policy() -> None:
    cpu = torch.device("cpu")
    assert train_threads(TrainConfig(batch_size=100), cpu) == 1
    assert train_threads(TrainConfig(batch_size=SMALL_BATCH + 1), cpu) is None
    assert train_threads(TrainConfig(batch_size=100, threads=2), cpu) == 2
    with cpu_threads(2):  # --threads 2: the user's choice is kept
        assert train_threads(TrainConfig(batch_size=100), cpu) is None
    before = torch.get_num_threads()
    _train(_blobs(60), epochs=1)
    assert torch.get_num_threads() == before


def test_memory_mapped_features_are_not_copied(tmp_path: Path) -> None:
    x = _blobs(n=20000, d=128)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    from icbpl import ICBPL

    # init="random": this bounds training itself; the default start (icbpl.core.smoothing) holds an
    # (N, 128) PCA copy by design
    model = ICBPL(
        3, latent_dim=4, hidden=(16,), epochs=1, batch_size=100, n_neighbours=2, init="random"
    )
    model.fit(mm[:200], views=mm[:200])  # warm up: first-use allocations of the libraries
    tracemalloc.start()
    try:
        model.fit(mm, views=mm)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert model.labels_.shape == (20000,)
    assert peak < mm.nbytes / 2, f"peak {peak} bytes for {mm.nbytes} bytes of features"
