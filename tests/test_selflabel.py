"""SCAN's self-labelling after ICBPL: the stage alone, in the estimator, and on the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

from icbpl import ICBPL, evaluate
from icbpl.model.selflabel import self_label
from test_cli import FAST, run_main
from test_cli_k_range import folder as folder


def _blobs() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_blobs(400, n_features=12, centers=4, cluster_std=1.5, random_state=1)
    return x.astype(np.float32), y


def _noisy(y: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = y.copy()
    flip = rng.random(len(y)) < share
    out[flip] = rng.integers(0, y.max() + 1, int(flip.sum()))
    return out


def test_self_label_cleans_noisy_clusters_and_is_seeded() -> None:
    """Start from clusters with 25% of labels scrambled: the classifier recovers the blobs."""
    x, y = _blobs()
    start = _noisy(y, 0.25)
    assert evaluate(y, start)["acc"] < 0.85
    result = self_label(x, start, 4, epochs=10, threshold=0.9, seed=3)
    assert evaluate(y, result.labels)["acc"] >= 0.98
    assert result.probs.shape == (400, 4) and np.allclose(result.probs.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(result.labels, (x @ result.weight + result.bias).argmax(1))
    # small data: distillation runs enough epochs for 1000 steps of batch 256 (2 per epoch)
    assert result.info["distil_epochs"] == 500
    # the self-labelling epochs made the classifier confident (distillation alone on noisy
    # labels leaves it unsure)
    distilled = self_label(x, start, 4, epochs=0, threshold=0.9, seed=3)
    assert result.info["n_confident"] > distilled.info["n_confident"] + 50
    again = self_label(x, start, 4, epochs=10, threshold=0.9, seed=3)
    np.testing.assert_array_equal(again.labels, result.labels)
    np.testing.assert_array_equal(again.weight, result.weight)


def test_self_label_uses_given_views() -> None:
    x, y = _blobs()
    rng = np.random.default_rng(0)
    views = x[None] + rng.normal(0, 0.3, (2, *x.shape)).astype(np.float32)
    result = self_label(x, _noisy(y, 0.25), 4, views=views, epochs=5)
    assert evaluate(y, result.labels)["acc"] >= 0.98


@pytest.mark.parametrize(
    ("labels", "kwargs", "match"),
    [
        (np.zeros(5, int), {}, r"labels should be \(400,\) cluster indices in \[0, 4\)"),
        (np.full(400, 4), {}, r"labels should be \(400,\) cluster indices"),
        (np.zeros(400, int), {"distil_epochs": 0}, "distil_epochs=0 should be >= 1"),
        (np.zeros(400, int), {"epochs": -1}, "epochs=-1 >= 0"),
    ],
)
def test_self_label_bad_input(labels: np.ndarray, kwargs: dict, match: str) -> None:
    x, _ = _blobs()
    with pytest.raises(ValueError, match=match):
        self_label(x, labels, 4, **kwargs)


def test_estimator_self_labels_predicts_and_saves(tmp_path: Path) -> None:
    x, y = _blobs()
    kw = dict(epochs=3, hidden=(16,), latent_dim=8, n_neighbours=2, batch_size=32)
    plain = ICBPL(n_clusters=4, **kw).fit(x, y)
    assert plain.classifier_ is None and plain.self_label_ is None
    model = ICBPL(n_clusters=4, self_label_epochs=5, **kw).fit(x, y)
    assert model.classifier_ is not None and model.self_label_ is not None
    assert model.self_label_["metrics_before"] == evaluate(y, plain.labels_)
    assert model.self_label_["metrics"] == evaluate(y, model.labels_)
    weight, bias = model.classifier_
    np.testing.assert_array_equal(model.predict(x), (x @ weight + bias).argmax(1))
    np.testing.assert_array_equal(model.labels_, model.predict(x))
    assert np.allclose(model.soft_assign(x[:3]).sum(1), 1.0, atol=1e-5)
    # the latent space is still the head's
    with torch.no_grad():
        latent = model.head_(torch.from_numpy(x[:5])).numpy()
    np.testing.assert_allclose(model.transform(x[:5]), latent, atol=1e-6)
    loaded = ICBPL.load(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.predict(x), model.labels_)
    assert ICBPL.load(plain.save(tmp_path / "p")).classifier_ is None
    with pytest.raises(ValueError, match="self_label_epochs=-1 should be an integer >= 0"):
        ICBPL(n_clusters=4, self_label_epochs=-1, **kw).fit(x)


def test_cli_self_label_epochs(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["cluster", folder, "--k", "3", "--out", out, "--cache-dir", tmp_path / "cache"]
    code, stdout, err = run_main([*argv, "--self-label-epochs", "2", *FAST])
    assert code == 0, err
    assert "self-labelled" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["self_label_epochs"] == 2
    assert summary["self_label"]["epochs"] == 2 and "metrics" in summary["self_label"]
    rows = (out / "assignments.csv").read_text().splitlines()[1:]
    scores = [float(r.split(",")[3]) for r in rows]
    assert len(rows) == 18 and all(0.0 <= s <= 1.0 for s in scores)
    code, _, err = run_main(["predict", out, folder, "--out", tmp_path / "p.csv"])
    assert code == 0, err
    predicted = (tmp_path / "p.csv").read_text().splitlines()[1:]
    assert [r.rsplit(",", 1)[0] for r in predicted] == rows  # predict adds "unassigned"
