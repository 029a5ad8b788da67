"""Issue 19, items 6 and 7: every ICBPL parameter is checked against one table, by ``fit`` and by
``ICBPL.load``, with messages that name the parameter; crafted saved models are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from icbpl.model.estimator import ICBPL
from icbpl.model.params import PARAMETER_CONSTRAINTS

FAST = {"epochs": 2, "batch_size": 20, "latent_dim": 8, "hidden": (16,)}


def _data(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32)


def test_table_covers_every_init_parameter() -> None:
    assert set(PARAMETER_CONSTRAINTS) == set(ICBPL().get_params())


def test_the_pipeline_passes_the_estimators_parameters_with_its_defaults() -> None:
    """`ClusterConfig.model_params()` names only ICBPL parameters (so ``ICBPL(**params)``
    takes them) and, left at its defaults, gives ICBPL's own defaults; the CLI's defaults are
    ClusterConfig's (`icbpl.cli._parser` reads them from its fields)."""
    from icbpl.cli._parser import DEFAULTS
    from icbpl.pipeline import ClusterConfig

    params = ClusterConfig(path="photos", k=3).model_params()
    defaults = ICBPL().get_params()
    assert set(params) <= set(PARAMETER_CONSTRAINTS)
    assert {name: defaults[name] for name in params} == {
        name: tuple(v) if isinstance(v, list) else v for name, v in params.items()
    }
    assert DEFAULTS["seed"] == params["random_state"]
    assert DEFAULTS["train_batch_size"] == params["batch_size"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"epochs": 0}, "epochs=0 should be an integer >= 1"),
        ({"batch_size": 0}, "batch_size=0 should be an integer >= 2"),
        ({"n_clusters": "3"}, "n_clusters='3' should be an integer >= 2"),
        ({"lr": float("nan")}, "lr=nan should be a finite number > 0"),
        ({"epochs": True}, "epochs=True should be"),
        ({"distance": "manhattan"}, "distance='manhattan' should be one of"),
        ({"device": "../../etc/passwd"}, "device='../../etc/passwd' should be"),
        ({"loss_weights": (1, 2, 3)}, "loss_weights=.* should be 4 numbers"),
        ({"loss_weights": (8, 2, 2, 1, 2)}, "loss_weights=.* should be 4 numbers"),
        ({"hidden": (0,)}, "hidden=.* should be a list of integers >= 1"),
        ({"random_state": -1}, "random_state=-1 should be None or an integer >= 0"),
        ({"init": "pca"}, "init='pca' should be one of"),
    ],
)
def test_fit_rejects_bad_parameters_with_their_name(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ICBPL(n_clusters=params.pop("n_clusters", 3), **params).fit(_data())


def test_fit_rejects_string_labels() -> None:
    y = np.array(["a", "b"] * 20)
    with pytest.raises(ValueError, match="y of dtype <U1 should hold integer class labels"):
        ICBPL(n_clusters=2, **FAST).fit(_data(), y)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return ICBPL(n_clusters=3, **FAST).fit(_data()).save(tmp_path / "model")


def _edit_config(folder: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = folder / "config.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["params"].update(n_clusters="10"), "n_clusters='10' should be"),
        (lambda m: m["params"].update(n_clusters=-5), "n_clusters=-5 should be"),
        (lambda m: m["params"].update(device="../../etc/passwd"), "device='../../etc/passwd'"),
        (lambda m: m["params"].update(surprise=1), r"unknown ICBPL parameter\(s\) \['surprise'\]"),
        (lambda m: m.update(extra=1), r"unknown field\(s\) \['extra'\]"),
        (lambda m: m.update(n_features_in=0), "n_features_in=0 should be"),
        (lambda m: m.update(best_epoch=99), "best_epoch=99 should be <= epochs=2"),
        (lambda m: m.update(best_epoch=-1), "best_epoch=-1 should be an integer >= 0"),
    ],
)
def test_load_refuses_crafted_config_naming_the_field(saved: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    _edit_config(saved, edit)
    with pytest.raises(ValueError, match=message):
        ICBPL.load(saved)


def test_load_accepts_the_warm_start_as_the_selected_epoch(saved: Path) -> None:
    _edit_config(saved, lambda m: m.update(best_epoch=0))
    assert ICBPL.load(saved).best_epoch_ == 0


@pytest.mark.parametrize("name", ["centroids", "head.net.0.weight"])
def test_load_refuses_non_finite_tensors(saved: Path, name: str) -> None:
    file = saved / "model.safetensors"
    tensors = load_file(str(file))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(file))
    with pytest.raises(ValueError, match=f"tensor '{name}' holds NaN or inf"):
        ICBPL.load(saved)


def test_load_refuses_wrong_centroid_shape(saved: Path) -> None:
    file = saved / "model.safetensors"
    tensors = load_file(str(file))
    tensors["centroids"] = tensors["centroids"][:2].clone()
    save_file(tensors, str(file))
    with pytest.raises(ValueError, match="tensor 'centroids' has shape"):
        ICBPL.load(saved)


def test_load_roundtrip_still_predicts_the_same(saved: Path) -> None:
    model = ICBPL.load(saved)
    again = ICBPL.load(model.save(saved.parent / "again"))
    np.testing.assert_array_equal(model.predict(_data()), again.predict(_data()))
    assert oct((saved / "config.json").stat().st_mode & 0o777) != oct(0o600)
