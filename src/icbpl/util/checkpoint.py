"""Training checkpoints and weight files in safetensors + JSON, written atomically, never pickled.

A checkpoint holds everything a training loop needs to continue as if it had never stopped:
module weights and buffers, optimiser state (flattened into tensors + JSON), scheduler state (JSON),
explicit ``torch.Generator`` states, the global RNG states of torch (CPU, CUDA, MPS), numpy and
Python, extra tensors (PEDCC points, neighbour indices ...) and JSON metadata (epoch, history,
config).

Layout of a checkpoint directory::

    epoch-00003.safetensors   all tensors, keys "module/<name>/<key>", "optim/<name>/<pid>/<key>",
                              "gen/<name>", "rng/...", "extra/<name>"
    epoch-00003.json          scalars: epoch, optimiser param groups, scheduler states, meta ...
    latest.json               pointer to the newest complete pair, replaced last

Every file is written to a temporary name, flushed to disk and moved into place with
:func:`os.replace`, and ``latest.json`` only changes once both files of a pair are complete, so a
process killed at any instant leaves either the previous or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import json
import logging
import pickle
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn

from icbpl.util.atomic import atomic_write_bytes, write_json

__all__ = [
    "Checkpoint",
    "has_checkpoint",
    "load_checkpoint",
    "load_weights",
    "read_weights_file",
    "save_checkpoint",
    "save_weights",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_POINTER = "latest.json"


class _Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` returns besides restoring objects in place."""

    epoch: int
    tensors: dict[str, Tensor]
    meta: dict[str, Any]
    path: Path


# --------------------------------------------------------------------------- atomic file writes


def _write_json(path: Path, obj: Any) -> None:
    write_json(path, obj, indent=1)


def _write_tensors(path: Path, tensors: Mapping[str, Tensor], metadata: dict[str, str]) -> None:
    # safetensors refuses shared or strided storage: give every tensor its own contiguous copy
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write_bytes(path, save(plain, metadata=metadata))


# --------------------------------------------------------------------------- weight files


def save_weights(path: str | Path, state: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` (``.safetensors``) and ``meta`` to the ``.json`` beside it.

    Both files are written atomically; the JSON is written first, so a weights file never
    appears without its description. Returns the weights path.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights path {str(path)!r} should end in '.safetensors'")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path.with_suffix(".json"), dict(meta))
    _write_tensors(path, state, {"format": "pt"})
    return path


def load_weights(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a state dict and its JSON description (``{}`` when there is none).

    ``.safetensors`` files are read directly; ``.pt``/``.pth``/``.ckpt`` files through
    ``torch.load(weights_only=True)`` (a nested ``state_dict``/``model`` entry is unwrapped).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    meta_path = path.with_suffix(".json")
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if path.suffix == ".safetensors":
        return load_file(str(path)), meta
    if path.suffix in {".pt", ".pth", ".ckpt", ".bin"}:
        obj = read_weights_file(path)
        for key in ("state_dict", "model", "encoder", "backbone"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if not isinstance(obj, dict):
            raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict")
        return {k: v for k, v in obj.items() if isinstance(v, Tensor)}, meta
    raise ValueError(
        f"weights file {str(path)!r} has suffix {path.suffix!r}; expected .safetensors, .pt or .pth"
    )


def read_weights_file(path: str | Path) -> Any:
    """Read a ``.pth``/``.tar`` (``torch.load(weights_only=True)``) or ``.safetensors`` file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"weights file {str(p)!r} does not exist; pass the path of a checkpoint file, "
            "None for the default weights or 'random'"
        )
    if p.suffix == ".safetensors":
        return load_file(str(p), device="cpu")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{str(p)!r} holds pickled Python objects besides tensors, which are not loaded "
            f"for safety ({str(err).splitlines()[0]}). If you trust the file, re-save its "
            "weights: torch.save(torch.load(path, weights_only=False)['state_dict'], new_path)"
        ) from err


# --------------------------------------------------------------------------- RNG states


def _rng_tensors() -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = state
    if hasattr(torch, "mps") and torch.backends.mps.is_available():
        tensors["rng/mps"] = torch.mps.get_rng_state()
    legacy = np.random.mtrand._rand  # the global RandomState behind np.random.*
    name, keys, pos, has_gauss, cached = legacy.get_state(legacy=True)
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, pystate, gauss = random.getstate()
    meta = {
        "numpy": [name, int(pos), int(has_gauss), float(cached)],
        "python": [version, list(pystate), gauss],
    }
    return tensors, meta


def _restore_rng(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng/cuda/"))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    if "rng/mps" in tensors and hasattr(torch, "mps") and torch.backends.mps.is_available():
        torch.mps.set_rng_state(tensors["rng/mps"])
    name, pos, has_gauss, cached = meta["numpy"]
    keys = tensors["rng/numpy"].numpy().astype(np.uint32)
    np.random.mtrand._rand.set_state((name, keys, int(pos), int(has_gauss), float(cached)))
    version, pystate, gauss = meta["python"]
    random.setstate((version, tuple(pystate), gauss))


# --------------------------------------------------------------------------- optimiser flattening


def _flatten_optimizer(
    name: str, opt: torch.optim.Optimizer
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``opt.state_dict()`` into tensors and a JSON-able remainder (no pickle)."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{name}/{pid}/{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(
    name: str, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim/{name}/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, field = key[len(prefix) :].split("/", 1)
            state.setdefault(int(pid), {})[field] = value
    for pid, fields in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(fields)
    groups = [
        {k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    directory: str | Path,
    *,
    epoch: int,
    modules: Mapping[str, nn.Module] | None = None,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    schedulers: Mapping[str, _Stateful] | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    tensors: Mapping[str, Tensor] | None = None,
    meta: Mapping[str, Any] | None = None,
    keep: int = 1,
) -> Path:
    """Write a complete training state for ``epoch`` (epochs completed) into ``directory``.

    Args:
        directory: created if missing; holds the checkpoint pairs and ``latest.json``.
        epoch: number of completed epochs; training resumes at this epoch index.
        modules: weights and buffers (``state_dict``) of each module.
        optimizers: optimiser states, flattened to tensors + JSON.
        schedulers: objects whose ``state_dict()`` is JSON-serialisable.
        generators: explicit RNGs (their ``get_state()``).
        tensors: any extra tensors (PEDCC points, neighbour indices ...).
        meta: JSON-serialisable extras (history, config ...).
        keep: number of newest checkpoints kept; older pairs are deleted after the pointer moves.

    Global RNG states (torch, CUDA, MPS, numpy, Python ``random``) are always included.
    Returns the path of the tensors file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    flat: dict[str, Tensor] = {}
    for name, module in (modules or {}).items():
        for key, value in module.state_dict().items():
            flat[f"module/{name}/{key}"] = value
    optim_meta: dict[str, Any] = {}
    for name, opt in (optimizers or {}).items():
        t, m = _flatten_optimizer(name, opt)
        flat.update(t)
        optim_meta[name] = m
    for name, gen in (generators or {}).items():
        flat[f"gen/{name}"] = gen.get_state()
    for name, value in (tensors or {}).items():
        flat[f"extra/{name}"] = value
    rng_t, rng_meta = _rng_tensors()
    flat.update(rng_t)
    stem = f"epoch-{epoch:05d}"
    record = {
        "format_version": FORMAT_VERSION,
        "epoch": int(epoch),
        "optimizers": optim_meta,
        "schedulers": {n: s.state_dict() for n, s in (schedulers or {}).items()},
        "rng": rng_meta,
        "meta": dict(meta or {}),
    }
    tensors_path = directory / f"{stem}.safetensors"
    _write_tensors(tensors_path, flat, {"format": "pt", "epoch": str(epoch)})
    _write_json(directory / f"{stem}.json", record)
    _write_json(directory / _POINTER, {"epoch": int(epoch), "stem": stem})
    _prune(directory, keep)
    logger.debug("checkpoint for epoch %d written to %s", epoch, tensors_path)
    return tensors_path


def _prune(directory: Path, keep: int) -> None:
    stems = sorted({p.stem for p in directory.glob("epoch-*.safetensors")})
    for stem in stems[: max(0, len(stems) - max(1, keep))]:
        for suffix in (".safetensors", ".json"):
            (directory / f"{stem}{suffix}").unlink(missing_ok=True)


def has_checkpoint(directory: str | Path) -> bool:
    """True when ``directory`` holds a complete checkpoint."""
    return (Path(directory) / _POINTER).is_file()


def load_checkpoint(
    directory: str | Path,
    *,
    modules: Mapping[str, nn.Module] | None = None,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    schedulers: Mapping[str, _Stateful] | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    restore_rng: bool = True,
) -> Checkpoint | None:
    """Restore the newest checkpoint in ``directory`` into the given objects; ``None`` if absent.

    The objects must be built exactly as for the run that wrote the checkpoint (same parameters,
    same optimiser parameter groups); their state is overwritten in place. Module tensors are
    copied onto the modules' devices; optimiser state follows its parameters.
    """
    directory = Path(directory)
    if not has_checkpoint(directory):
        return None
    pointer = json.loads((directory / _POINTER).read_text())
    stem = pointer["stem"]
    record = json.loads((directory / f"{stem}.json").read_text())
    if record.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {directory / stem} has format_version={record.get('format_version')}, "
            f"this icbpl reads {FORMAT_VERSION}; start afresh with resume=False"
        )
    flat = load_file(str(directory / f"{stem}.safetensors"))
    for name, module in (modules or {}).items():
        prefix = f"module/{name}/"
        sd = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
        module.load_state_dict(sd, strict=True)
    for name, opt in (optimizers or {}).items():
        if name not in record["optimizers"]:
            raise KeyError(
                f"checkpoint has no optimiser {name!r} (has {list(record['optimizers'])})"
            )
        opt.load_state_dict(_unflatten_optimizer(name, flat, record["optimizers"][name]))
    for name, sched in (schedulers or {}).items():
        sched.load_state_dict(record["schedulers"][name])
    for name, gen in (generators or {}).items():
        gen.set_state(flat[f"gen/{name}"])
    if restore_rng:
        _restore_rng(flat, record["rng"])
    extras = {k[len("extra/") :]: v for k, v in flat.items() if k.startswith("extra/")}
    logger.info("resumed from %s (epoch %d)", directory / stem, record["epoch"])
    return Checkpoint(
        epoch=int(record["epoch"]),
        tensors=extras,
        meta=record["meta"],
        path=directory / f"{stem}.safetensors",
    )
