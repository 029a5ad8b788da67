"""Training loop: early stopping on the label-free score, thread policy, memory-mapped input."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from icbpl.core.pedcc import make_pedcc
from icbpl.model._embedding import embed_labels
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


def test_the_warm_started_head_is_epoch_0_and_kept_unless_an_epoch_scores_higher() -> None:
    x = _blobs()
    rng = np.random.default_rng(0)  # the blobs' own classes, drawn as _blobs draws them
    rng.standard_normal((3, 12))
    truth = rng.integers(0, 3, len(x))
    c = torch.from_numpy(make_pedcc(3, 4)).float()
    xt = torch.as_tensor(x)

    def run(init_epochs: int) -> object:
        cfg = TrainConfig(
            n_clusters=3, latent_dim=4, hidden=(16,), batch_size=50, epochs=4,
            init_epochs=init_epochs,
        )  # fmt: skip
        return train_head(xt, c, cfg, views=xt[None] + 0.01, init_targets=truth)

    # 30 warm-start epochs reach the true partition: no ICBPL epoch scores higher, it is kept
    exact = run(30)
    start = exact.start  # type: ignore[attr-defined]
    assert start is not None and start.epoch == 0
    assert sorted(start.sizes) == sorted(np.bincount(truth).tolist())
    assert all(r.score <= start.score for r in exact.history)  # type: ignore[attr-defined]
    assert exact.best_epoch == 0 and exact.best_record is start  # type: ignore[attr-defined]
    labels, _ = embed_labels(exact.head, xt, c, keep=False)  # type: ignore[attr-defined]
    assert np.bincount(labels, minlength=3).tolist() == start.sizes
    # 3 warm-start epochs leave an unbalanced start that the ICBPL epochs improve on
    rough = run(3)
    assert rough.best_epoch >= 1  # type: ignore[attr-defined]
    assert rough.best_record.score > rough.start.score  # type: ignore[attr-defined]
