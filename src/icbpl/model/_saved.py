"""The files of a saved `icbpl.model.estimator.ICBPL` (``model.safetensors`` + ``config.json``):
writing them, and checking every field and tensor before `ICBPL.load` trusts them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save

from icbpl.core.head import ProjectionHead
from icbpl.model.params import drop_retired, validate_params
from icbpl.util.atomic import atomic_write_bytes, atomic_write_text, jsonable

__all__ = ["check_tensors", "load_model", "read_meta", "save_model"]

FORMAT_VERSION = 1

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
    for name, low in (("n_features_in", 1), ("best_epoch", 0)):  # epoch 0: the warm start
        value = meta[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{cfg_file}: {name}={value!r} should be an integer >= {low}")
    if meta["best_epoch"] > meta["params"]["epochs"]:
        raise ValueError(
            f"{cfg_file}: best_epoch={meta['best_epoch']} should be <= "
            f"epochs={meta['params']['epochs']}"
        )
    return meta


def check_tensors(
    weights_file: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Shapes of the PEDCC points (and cluster offsets), and finiteness of every tensor."""
    params = meta["params"]
    k, d = params["n_clusters"], params["latent_dim"]
    shapes: dict[str, tuple[int, ...]] = {"centroids": (k, d)}
    if "cluster_offsets" in tensors:
        shapes["cluster_offsets"] = (k,)
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


def save_model(model: Any, folder: Path) -> Path:
    """Write the fitted ``model``'s head, PEDCC points (and cluster offsets) and
    ``config.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"head.{k}": v.contiguous() for k, v in model.head_.state_dict().items()}
    tensors["centroids"] = torch.from_numpy(np.ascontiguousarray(model.centroids_))
    offsets = getattr(model, "cluster_offsets_", None)
    if offsets is not None and np.any(offsets):
        tensors["cluster_offsets"] = torch.from_numpy(np.ascontiguousarray(offsets))
    atomic_write_bytes(folder / "model.safetensors", save(tensors))
    meta = {
        "format_version": FORMAT_VERSION,
        "params": jsonable(model.get_params()),
        "n_features_in": int(model.n_features_in_),
        "best_epoch": int(model.best_epoch_),
    }
    atomic_write_text(folder / "config.json", json.dumps(meta, indent=2))
    return folder


def load_model(cls: Any, folder: Path) -> Any:
    """``cls(**params)`` with the head, PEDCC points and cluster offsets saved in ``folder``."""
    cfg_file, weights_file = folder / "config.json", folder / "model.safetensors"
    if not cfg_file.is_file() or not weights_file.is_file():
        raise FileNotFoundError(
            f"{folder} is not a saved ICBPL model: expected config.json and "
            "model.safetensors written by ICBPL.save()"
        )
    meta = read_meta(cfg_file, cls().get_params(), FORMAT_VERSION)
    params = dict(meta["params"])
    params["hidden"] = tuple(params["hidden"])
    params["loss_weights"] = tuple(params["loss_weights"])
    model = cls(**params)
    try:
        tensors = load_file(str(weights_file))
    except Exception as err:
        raise ValueError(f"{weights_file} cannot be read as safetensors: {err}") from None
    check_tensors(weights_file, tensors, meta)
    head = ProjectionHead(meta["n_features_in"], params["hidden"], params["latent_dim"])
    state = {k[5:]: v for k, v in tensors.items() if k.startswith("head.")}
    try:
        head.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"{weights_file}: the head's tensors do not match config.json "
            f"({' '.join(str(err).split())[:300]})"
        ) from None
    model.head_ = head.eval()
    model.centroids_ = tensors["centroids"].numpy()
    k = int(params["n_clusters"])
    model.cluster_offsets_ = (
        tensors["cluster_offsets"].numpy()
        if "cluster_offsets" in tensors
        else np.zeros(k, dtype=np.float32)
    )
    model.n_features_in_ = int(meta["n_features_in"])
    model.best_epoch_ = int(meta["best_epoch"])
    model.history_ = []
    model.start_ = None
    model.heads_ = []
    return model
