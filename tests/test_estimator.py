"""The ICBPL estimator: sklearn contract, accuracy on real small data, save/load, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_blobs
from sklearn.utils.estimator_checks import parametrize_with_checks

from icbpl.core.metrics import evaluate
from icbpl.model.estimator import ICBPL

FAST = dict(epochs=3, hidden=(16,), latent_dim=8, n_neighbours=2, batch_size=32)

# Checks skipped, each with its reason (the estimator still passes every other check).
_K1 = (
    "sklearn sets n_clusters=1 here; ICBPL needs k >= 2 PEDCC points and raises a clear "
    "ValueError instead of fitting a trivial one-cluster model"
)
EXPECTED_FAILED = {
    "check_fit2d_1sample": "one sample cannot form n_clusters >= 2 clusters; we raise a clear "
    "ValueError naming n_samples and n_clusters, in words sklearn's check does not look for",
    "check_dont_overwrite_parameters": _K1,
    "check_fit2d_1feature": _K1,
    "check_methods_subset_invariance": _K1,
    "check_fit2d_predict1d": _K1,
}
CONTRACT = ICBPL(n_clusters=3, epochs=25, hidden=(16,), latent_dim=8, n_neighbours=2, batch_size=16)


@parametrize_with_checks(
    [CONTRACT],
    expected_failed_checks=lambda est: EXPECTED_FAILED,
)
def test_sklearn_contract(estimator: ICBPL, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


def _blobs() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_blobs(300, n_features=16, centers=4, cluster_std=1.0, random_state=0)
    return x.astype(np.float32), y


def test_separable_blobs_are_recovered() -> None:
    x, y = _blobs()
    model = ICBPL(n_clusters=4, epochs=15, hidden=(64,), latent_dim=16).fit(x)
    assert evaluate(y, model.labels_)["acc"] >= 0.98


def test_digits_beats_chance_by_far() -> None:
    x, y = load_digits(return_X_y=True)
    model = ICBPL(n_clusters=10, epochs=12).fit(x, y)
    assert model.history_[-1].metrics is not None
    assert evaluate(y, model.labels_)["acc"] >= 0.7


def test_fit_predict_equals_fit_then_predict_and_seed_reproducible() -> None:
    x, _ = _blobs()
    a = ICBPL(n_clusters=4, random_state=3, **FAST).fit_predict(x)
    model = ICBPL(n_clusters=4, random_state=3, **FAST).fit(x)
    np.testing.assert_array_equal(a, model.predict(x))
    np.testing.assert_array_equal(a, model.labels_)


def test_soft_scores_and_transform() -> None:
    x, _ = _blobs()
    model = ICBPL(n_clusters=4, **FAST).fit(x)
    z = model.transform(x)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    p = model.soft_assign(x)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(p.argmax(1), model.predict(x))
    cos = model.cosine_scores(x)
    assert cos.shape == (300, 4) and (np.abs(cos) <= 1 + 1e-5).all()


def test_save_load_roundtrip(tmp_path: Path) -> None:
    x, _ = _blobs()
    model = ICBPL(n_clusters=4, **FAST).fit(x)
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded = ICBPL.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_allclose(loaded.transform(x), model.transform(x), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="not a saved ICBPL model"):
        ICBPL.load(tmp_path)


def test_views_and_neighbours_are_used() -> None:
    x, _ = _blobs()
    rng = np.random.default_rng(0)
    views = x[None] + rng.normal(0, 0.1, (2, *x.shape)).astype(np.float32)
    nb = np.stack([np.roll(np.arange(300), 1), np.roll(np.arange(300), 2)], axis=1)
    model = ICBPL(n_clusters=4, **FAST).fit(x, views=views, neighbours=nb)
    assert model.history_[0].losses["augmentation"] > 0
    assert model.history_[0].losses["neighbour"] > 0


@pytest.mark.parametrize(
    ("kwargs", "fit_kwargs", "match"),
    [
        ({"n_clusters": 1}, {}, "n_clusters=1 should be an integer >= 2"),
        ({"n_clusters": 500}, {}, "n_samples=300 should be >= n_clusters=500"),
        ({}, {"views": np.zeros((2, 5, 16))}, r"views should have shape \(V, 300, 16\)"),
        ({}, {"neighbours": np.zeros((5, 2), int)}, r"neighbours should be an integer array"),
        ({}, {"neighbours": np.full((300, 2), 999)}, "outside"),
        ({"loss_weights": (8, 2, 2)}, {}, "should be 4 numbers >= 0"),
        ({"loss_weights": (8, 2, -2, 1)}, {}, "should be 4 numbers >= 0"),
        ({"loss_weights": (8, 2, 2, 1, 2)}, {}, "should be 4 numbers >= 0"),
    ],
)
def test_bad_input_errors(kwargs: dict, fit_kwargs: dict, match: str) -> None:
    x, _ = _blobs()
    params = {**FAST, "n_clusters": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        ICBPL(**params).fit(x, **fit_kwargs)


def test_nan_and_1d_errors() -> None:
    x, _ = _blobs()
    x[7, 3] = np.nan
    with pytest.raises(ValueError, match=r"1 row\(s\) with NaN or inf \(first: \[7\]\)"):
        ICBPL(n_clusters=4, **FAST).fit(x)
    with pytest.raises(ValueError, match="Expected 2D array"):
        ICBPL(n_clusters=4, **FAST).fit(np.zeros(10))


def test_several_heads_keep_the_best_label_free_score() -> None:
    x, y = _blobs()
    single = ICBPL(n_clusters=4, **FAST).fit(x, y)
    multi = ICBPL(n_clusters=4, n_heads=3, **FAST).fit(x, y)
    assert [h["init"] for h in multi.heads_] == ["kmeans", "scan"] * 3  # init="auto"
    assert len({h["seed"] for h in multi.heads_}) == 3
    scores = [h["score"] for h in multi.heads_]
    chosen = multi.history_[multi.best_epoch_ - 1].score
    assert chosen == max(scores)
    # head 0 is exactly the single-head model
    assert multi.heads_[0]["metrics"] == single.heads_[0]["metrics"]
    assert multi.heads_[0]["score"] == single.history_[single.best_epoch_ - 1].score
    with pytest.raises(ValueError, match="n_heads=0"):
        ICBPL(n_clusters=4, n_heads=0, **FAST).fit(x)


def test_a_model_saved_with_a_retired_parameter_loads_at_its_no_op_value(tmp_path: Path) -> None:
    """Models saved before feature_power / min_distance_warmup / self_label_epochs / the fifth
    (assignment) loss weight were removed still load when they held the value that changed
    nothing; any other value is refused by name."""
    import json

    X, _ = make_blobs(200, n_features=6, centers=3, random_state=0)
    model = ICBPL(n_clusters=3, epochs=3, random_state=0).fit(X)
    folder = model.save(tmp_path / "m")
    meta = json.loads((folder / "config.json").read_text())
    meta["params"].update(feature_power=1.0, min_distance_warmup=0, self_label_epochs=0)
    meta["params"]["loss_weights"] = [8.0, 2.0, 2.0, 1.0, 0.0]
    (folder / "config.json").write_text(json.dumps(meta))
    loaded = ICBPL.load(folder)
    assert loaded.get_params()["loss_weights"] == (8.0, 2.0, 2.0, 1.0)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    meta["params"]["feature_power"] = 0.5
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"feature_power=0.5 is no longer supported"):
        ICBPL.load(folder)
    meta["params"].update(feature_power=1.0, self_label_epochs=5)
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"self_label_epochs=5 is no longer supported"):
        ICBPL.load(folder)
    meta["params"].update(self_label_epochs=0, loss_weights=[8, 2, 2, 1, 2])
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"a fifth number \(the assignment loss weight\) is no"):
        ICBPL.load(folder)
    with pytest.raises(TypeError, match="self_label_epochs"):
        ICBPL(n_clusters=3, self_label_epochs=0)  # type: ignore[call-arg]


def test_kmeans_warm_start_keeps_many_clusters_when_k_is_large(tmp_path: Path) -> None:
    """k = 40 blobs on an 8-d latent sphere (PEDCC by repulsion): a random head collapses onto
    few PEDCC points, the k-means warm start begins from (and keeps) a spread-out partition."""
    x, y = make_blobs(1200, n_features=32, centers=40, cluster_std=0.5, random_state=3)
    params = {"n_clusters": 40, "latent_dim": 8, "epochs": 3, "batch_size": 100}
    random = ICBPL(**params, init="random", random_state=0).fit(x, y)
    warm = ICBPL(**params, init="kmeans", init_epochs=3, random_state=0).fit(x, y)
    n_random, n_warm = len(np.unique(random.labels_)), len(np.unique(warm.labels_))
    assert n_warm > n_random
    assert evaluate(y, warm.labels_)["acc"] > evaluate(y, random.labels_)["acc"] + 0.1
    loaded = ICBPL.load(warm.save(tmp_path / "m"))
    assert (loaded.init, loaded.init_epochs) == ("kmeans", 3)
    np.testing.assert_array_equal(loaded.predict(x), warm.labels_)
    with pytest.raises(ValueError, match="init='spectral'"):
        ICBPL(n_clusters=4, init="spectral", **FAST).fit(_blobs()[0])
    with pytest.raises(ValueError, match="init_epochs=0"):
        ICBPL(n_clusters=4, init="kmeans", init_epochs=0, **FAST).fit(_blobs()[0])


def test_kmeans_warm_start_with_a_last_batch_of_one_sample() -> None:
    """201 samples in batches of 100 leave one sample over; BatchNorm cannot train on it."""
    x, _ = make_blobs(201, n_features=8, centers=3, random_state=0)
    model = ICBPL(n_clusters=3, epochs=2, batch_size=100, init="kmeans", random_state=0).fit(x)
    assert model.labels_.shape == (201,) and len(model.history_) == 2


def test_scan_warm_start_starts_from_scans_clustering_step(tmp_path: Path) -> None:
    """init="scan": each head starts from the SCAN peer's clustering step (no self-labelling)
    on the same features, views and every neighbour column given; the kNN loss keeps its first
    n_neighbours columns."""
    from icbpl.core.neighbours import mine_neighbours
    from icbpl.peers import fit_peer

    x, y = make_blobs(400, n_features=16, centers=4, cluster_std=2.0, random_state=1)
    x = x.astype(np.float32)
    rng = np.random.default_rng(0)
    views = (x[None] + 0.3 * rng.standard_normal((2, *x.shape))).astype(np.float32)
    nb = mine_neighbours(x, 10)
    params = {"n_clusters": 4, "epochs": 3, "hidden": (32,), "latent_dim": 8, "batch_size": 64}
    model = ICBPL(**params, n_neighbours=2, init="scan", init_epochs=2, n_heads=2, random_state=5)
    model.fit(x, y, views=views, neighbours=nb)
    assert model.neighbours_.shape == (400, 2)
    np.testing.assert_array_equal(model.neighbours_, nb[:, :2])
    assert len(model.init_metrics_) == 2
    scan = fit_peer(
        "scan", x, 4, neighbours=nb, views=views, seed=5, schedule="tuned", self_label=False
    )
    assert model.init_metrics_[0] == evaluate(y, scan.labels)
    assert evaluate(y, model.labels_)["acc"] >= 0.95
    loaded = ICBPL.load(model.save(tmp_path / "m"))
    assert loaded.init == "scan"
    np.testing.assert_array_equal(loaded.predict(x), model.labels_)
    with pytest.raises(
        ValueError,
        match="init='spectral' should be one of random, kmeans, scan, auto",
    ):
        ICBPL(n_clusters=4, init="spectral", **FAST).fit(_blobs()[0])
    with pytest.raises(ValueError, match="init_epochs=0"):
        ICBPL(n_clusters=4, init="scan", init_epochs=0, **FAST).fit(_blobs()[0])


def test_auto_start_keeps_the_higher_scoring_of_the_kmeans_and_scan_heads() -> None:
    """init="auto": one head from each start (same seed), the one with the higher label-free
    score kept; each head equals the model fitted with that start alone."""
    x, y = make_blobs(400, n_features=16, centers=4, cluster_std=3.0, random_state=2)
    x = x.astype(np.float32)
    views = (x[None] + 0.3 * np.random.default_rng(0).standard_normal(x.shape)).astype(np.float32)
    params = dict(FAST, init_epochs=2, random_state=3)
    auto = ICBPL(4, init="auto", **params).fit(x, y, views=views)
    alone = {s: ICBPL(4, init=s, **params).fit(x, y, views=views) for s in ("kmeans", "scan")}
    assert [h["init"] for h in auto.heads_] == ["kmeans", "scan"]
    for head, start in zip(auto.heads_, ("kmeans", "scan"), strict=True):
        assert head["score"] == alone[start].heads_[0]["score"]
        assert head["best_epoch"] == alone[start].best_epoch_
    kept = max(("kmeans", "scan"), key=lambda s: alone[s].heads_[0]["score"])
    np.testing.assert_array_equal(auto.labels_, alone[kept].labels_)
    assert len(auto.init_metrics_) == 2


def test_scan_warm_start_mines_its_own_neighbours() -> None:
    """Without given neighbours, 20 are mined once: SCAN takes all, the kNN loss the first 2."""
    x, y = _blobs()
    model = ICBPL(n_clusters=4, init="scan", init_epochs=1, **FAST).fit(x, y)
    assert model.neighbours_.shape == (300, 2)
    assert len(model.init_metrics_) == 1 and model.init_metrics_[0]["acc"] > 0.9


def test_no_requested_cluster_is_left_empty_and_predict_keeps_the_fit() -> None:
    """Many clusters on few blobs: the default start fills every cluster (offsets), predict on
    the training rows gives labels_, the offsets survive save/load; the paper's start is left
    as it is."""
    import tempfile

    from icbpl.core.balance import min_cluster_size

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.3, size=(100, 8)) for c in range(3)]).astype(np.float32)
    k = 12
    model = ICBPL(k, epochs=3, hidden=(16,), latent_dim=16, random_state=0).fit(x)
    sizes = np.bincount(model.labels_, minlength=k)
    assert sizes.min() >= min_cluster_size(len(x), k)
    np.testing.assert_array_equal(model.predict(x), model.labels_)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = ICBPL.load(model.save(tmp))
    np.testing.assert_array_equal(loaded.predict(x), model.labels_)
    paper = ICBPL(k, init="random", epochs=3, hidden=(16,), latent_dim=16, random_state=0).fit(x)
    assert not paper.cluster_offsets_.any()
