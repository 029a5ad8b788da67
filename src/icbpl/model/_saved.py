"""Checks of a model saved by `icbpl.model.estimator.ICBPL.save`, before `ICBPL.load` trusts it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from icbpl.model.params import drop_retired, validate_params

__all__ = ["check_tensors", "read_meta"]

_META_FIELDS = ("format_version", "params", "n_features_in", "best_epoch")


def read_meta(cfg_file: Path, defaults: dict[str, Any], version: int) -> dict[str, Any]:
    """``config.json`` of a saved model, every field checked (the message names the field);
    parameters it lacks (saved by an older icbpl) take their ``defaults``."""
    try:
        meta = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{cfg_file} is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{cfg_file} should hold a JSON object, got {type(meta).__name__}")
    if meta.get("format_version") != version:
        raise ValueError(
            f"{cfg_file} has format_version={meta.get('format_version')!r}, "
            f"this icbpl reads {version}"
        )
    unknown = sorted(set(meta) - set(_META_FIELDS))
    missing = [f for f in _META_FIELDS if f not in meta]
    if unknown or missing:
        raise ValueError(f"{cfg_file}: unknown field(s) {unknown}, missing field(s) {missing}")
    if not isinstance(meta["params"], dict):
        raise ValueError(f"{cfg_file}: params should be a JSON object")
    meta["params"] = drop_retired(meta["params"], where=f"{cfg_file}: params")
    validate_params(meta["params"], where=f"{cfg_file}: params", complete=False)
    meta["params"] = {**defaults, **meta["params"]}
    validate_params(meta["params"], where=f"{cfg_file}: params")
    for name in ("n_features_in", "best_epoch"):
        value = meta[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{cfg_file}: {name}={value!r} should be an integer >= 1")
    if meta["best_epoch"] > meta["params"]["epochs"]:
        raise ValueError(
            f"{cfg_file}: best_epoch={meta['best_epoch']} should be <= "
            f"epochs={meta['params']['epochs']}"
        )
    return meta


def check_tensors(
    weights_file: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Shapes of the PEDCC points and classifier, and finiteness of every tensor."""
    params = meta["params"]
    k, d, n_in = params["n_clusters"], params["latent_dim"], meta["n_features_in"]
    shapes: dict[str, tuple[int, ...]] = {"centroids": (k, d)}
    if "classifier.weight" in tensors or "classifier.bias" in tensors:
        shapes.update({"classifier.weight": (n_in, k), "classifier.bias": (k,)})
    for name, shape in shapes.items():
        if name not in tensors:
            raise ValueError(f"{weights_file} lacks the tensor {name!r}")
        if tuple(tensors[name].shape) != shape:
            raise ValueError(
                f"{weights_file}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                f"config.json implies {shape}"
            )
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"{weights_file}: tensor {name!r} holds NaN or inf; re-train the model"
            )
