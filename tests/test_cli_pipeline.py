"""Units behind the command: the digits' affine views and the pipeline's configuration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from icbpl.data.digits import _affine, digits_views, load_digits_data
from icbpl.pipeline import ClusterConfig, PipelineError, write_assignments


# ------------------------------------------------------------------------------ digits
def test_load_digits_data() -> None:
    images, labels = load_digits_data()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert labels.shape == (1797,) and set(labels.tolist()) == set(range(10))


def test_digits_views_shape_seed_and_range() -> None:
    images, _ = load_digits_data()
    x = images[:50]
    views = digits_views(x, 4, seed=3)
    assert views.shape == (4, 50, 8, 8) and views.dtype == np.float32
    np.testing.assert_array_equal(views, digits_views(x, 4, seed=3))
    assert not np.array_equal(views, digits_views(x, 4, seed=4))
    assert not np.array_equal(views[0], views[1])  # each view has its own transform
    assert views.min() >= 0.0 and views.max() <= 1.0 + 1e-6  # bilinear: a convex combination
    # small transforms: each view stays close to its image
    assert np.abs(views - x[None]).mean() < np.abs(x[1:] - x[:-1]).mean()


def test_digits_views_identity_when_the_ranges_are_zero() -> None:
    images, _ = load_digits_data()
    views = digits_views(images[:10], 2, max_rotation=0.0, scale=(1.0, 1.0), max_shift=0.0)
    np.testing.assert_allclose(views, np.broadcast_to(images[:10], views.shape), atol=1e-6)


def test_affine_matches_hand_computed_transforms() -> None:
    image = np.arange(64, dtype=np.float32).reshape(8, 8)
    # a quarter turn about the centre (3.5, 3.5) maps the pixel grid onto itself
    turned = _affine(image, math.pi / 2, 1.0, (0.0, 0.0))
    assert np.allclose(turned, np.rot90(image, 1)) or np.allclose(turned, np.rot90(image, -1))
    # a whole-pixel shift moves the content by one row (zeros come in)
    shifted = _affine(image, 0.0, 1.0, (1.0, 0.0))
    np.testing.assert_allclose(shifted[1:], image[:-1], atol=1e-5)
    np.testing.assert_allclose(shifted[0], 0.0)
    # half a pixel: the bilinear average of two neighbouring rows
    half = _affine(image, 0.0, 1.0, (0.5, 0.0))
    np.testing.assert_allclose(half[1:], (image[1:] + image[:-1]) / 2, atol=1e-5)


def test_digits_views_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="should have shape"):
        digits_views(np.zeros((3, 8)), 2)
    with pytest.raises(ValueError, match="n_views=0"):
        digits_views(np.zeros((3, 8, 8)), 0)
    with pytest.raises(ValueError, match="scale"):
        digits_views(np.zeros((3, 8, 8)), 1, scale=(1.1, 0.9))


# ----------------------------------------------------------------------------- config
def test_config_round_trips_through_json() -> None:
    config = ClusterConfig(path="/data/photos", k=7, views=3, hidden=[256, 128], seed=5)  # type: ignore[arg-type]
    assert config.hidden == (256, 128)
    again = ClusterConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_config_from_dict_rejects_unknown_and_missing_keys() -> None:
    with pytest.raises(PipelineError, match="unknown configuration key"):
        ClusterConfig.from_dict({"path": "x", "k": 3, "epoch": 5})
    with pytest.raises(PipelineError, match="lacks"):
        ClusterConfig.from_dict({"path": "x"})


def test_config_from_dict_drops_retired_options_at_their_no_op_value() -> None:
    """A config.json written before self_label_epochs and the fifth (assignment) loss weight
    were removed still loads when they are 0; other values are refused by name."""
    old = {"path": "x", "k": 3, "self_label_epochs": 0, "loss_weights": [8, 2, 2, 1, 0]}
    config = ClusterConfig.from_dict(old)
    assert config == ClusterConfig(path="x", k=3)
    config.validate()
    with pytest.raises(PipelineError, match=r"self_label_epochs=2 is no longer supported"):
        ClusterConfig.from_dict({**old, "self_label_epochs": 2})
    with pytest.raises(PipelineError, match=r"loss_weights=\[8, 2, 2, 1, 2\]: a fifth number"):
        ClusterConfig.from_dict({**old, "loss_weights": [8, 2, 2, 1, 2]})


def test_config_from_file_checks_the_format(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(PipelineError, match="not an icbpl cluster configuration"):
        ClusterConfig.from_file(tmp_path)
    with pytest.raises(PipelineError, match="not found"):
        ClusterConfig.from_file(tmp_path / "nowhere")


def test_resolved_epochs_aims_at_2000_steps_within_20_to_60() -> None:
    auto = ClusterConfig(path="x", k=3)  # epochs=None, train batch 100
    assert auto.epochs is None
    assert auto.resolved_epochs(10_000) == 20  # 100 steps per epoch: 20 epochs = 2,000 steps
    assert auto.resolved_epochs(60_000) == 20  # 600 steps per epoch: the floor
    assert auto.resolved_epochs(5_000) == 40  # 50 steps per epoch
    assert auto.resolved_epochs(4_001) == 49  # 41 steps per epoch: ceil(2000 / 41)
    assert auto.resolved_epochs(36) == 60  # 1 step per epoch: the ceiling
    assert auto.resolved_epochs(0) == 60
    assert ClusterConfig(path="x", k=3, train_batch_size=200).resolved_epochs(10_000) == 40
    assert ClusterConfig(path="x", k=3, epochs=7).resolved_epochs(10_000) == 7


def test_epoch_progress_takes_its_total_from_each_start_event() -> None:
    from icbpl.cli._common import EpochProgress
    from icbpl.model.progress import FitEvent

    bar = EpochProgress(None, disable=False)  # a disabled tqdm does not count
    bar(FitEvent("training", "start", 20))
    bar(FitEvent("training", "epoch", 20, loss=0.5, score=0.3))
    assert bar.bar.total == 20 and bar.bar.n == 1
    assert bar.bar.postfix == "loss=0.500, score=0.300"
    bar(FitEvent("training", "start", 20))  # a second head
    assert bar.bar.total == 1 + 20  # the epochs done so far + the new head's
    bar.close()


def test_epoch_progress_counts_the_estimators_training_epochs() -> None:
    from icbpl import ICBPL
    from icbpl.cli._common import EpochProgress

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(3, 8))[np.repeat(np.arange(3), 40)] * 3).astype(np.float32)
    x += rng.normal(size=x.shape).astype(np.float32)
    bar = EpochProgress(None, disable=False)
    seen = []

    def progress(event: object) -> None:
        seen.append(event)
        bar(event)  # type: ignore[arg-type]

    # one start (init="auto" trains two heads: two training starts, see test_cli_messages)
    fitted = ICBPL(3, init="kmeans", epochs=4, batch_size=40, random_state=0)
    fitted.fit(x, progress=progress)
    assert (bar.bar.n, bar.bar.total) == (4, 4)
    assert bar.bar.desc.startswith("training")
    assert [(e.phase, e.kind) for e in seen] == [("training", "start")] + [
        ("training", "epoch")
    ] * 4
    scores = [e.score for e in seen if e.phase == "training" and e.kind == "epoch"]
    assert scores == [r.score for r in fitted.history_]
    # the callback only observes: the same fit without it gives the same partition
    plain = ICBPL(3, init="kmeans", epochs=4, batch_size=40, random_state=0)
    plain.fit(x)
    assert np.array_equal(plain.labels_, fitted.labels_)
    bar.close()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"k": 1}, "k=1 should be >= 2"),
        ({"k": "many"}, "should be an integer >= 2 or 'auto'"),
        ({"views": -1}, "views=-1"),
        ({"epochs": 0}, "epochs=0"),
        ({"latent_dim": 1}, "latent_dim=1"),
        ({"input_size": 4}, "input_size=4"),
        ({"loss_weights": (1.0, 1.0, -1.0, 1.0)}, "loss_weights"),
        ({"weights": "/no/such/file.pth"}, "does not exist"),
    ],
)
def test_config_validate(changes: dict[str, object], message: str) -> None:
    config = ClusterConfig(**{"path": "x", "k": 3, **changes})  # type: ignore[arg-type]
    with pytest.raises(PipelineError, match=message.replace("(", r"\(")):
        config.validate()


def test_write_assignments(tmp_path: Path) -> None:
    path = write_assignments(
        tmp_path / "a.csv",
        ["a", "b, c"],
        ["/x/a.png", ""],
        np.array([1, 0]),
        np.array([0.5, -0.25]),
        np.array([2, 3]),
    )
    lines = path.read_text().splitlines()
    assert lines == [
        "id,path,cluster,score,label",
        "a,/x/a.png,1,0.500000,2",
        '"b, c",,0,-0.250000,3',
    ]


def test_cpu_threads_limits_torch_and_blas_pools_and_restores_them() -> None:
    import torch
    from threadpoolctl import threadpool_info

    from icbpl.util.device import cpu_threads

    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before


def test_threads_option_of_cluster_and_predict() -> None:
    from icbpl.cli._parser import build_parser

    parser = build_parser()
    assert parser.parse_args(["cluster", "photos", "--k", "3", "--threads", "1"]).threads == 1
    assert parser.parse_args(["cluster", "photos", "--k", "3"]).threads is None
    assert (
        parser.parse_args(["predict", "run", "photos", "--out", "a.csv", "--threads", "2"]).threads
        == 2
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["cluster", "photos", "--k", "3", "--threads", "0"])
