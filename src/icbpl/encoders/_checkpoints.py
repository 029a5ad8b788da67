"""Reading foreign checkpoints: files, downloads, nesting, key prefixes, shape checks, identity.

Self-supervised checkpoints nest their weights (``state_dict``, ``model``, ``teacher``) and prefix
the keys with the training wrapper (``module.encoder_q.``, ``backbone.`` ...). The backbone's
keys are found by trying every prefix and keeping the one under which most keys name a tensor
of the target model (ties broken by :data:`PREFERRED_PREFIXES`); heads (``fc``, projector,
predictor, decoder) are dropped; a missing tensor or a shape mismatch is an error.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from icbpl.util.checkpoint import read_weights_file

__all__ = [
    "IGNORED_KEYS",
    "PREFERRED_PREFIXES",
    "WeightsUnavailableError",
    "download",
    "file_identity",
    "load_checkpoint",
    "load_into",
    "map_by_order",
    "resolve_weights",
    "select_prefix",
    "unwrap_state_dict",
]

logger = logging.getLogger(__name__)

#: Key prefixes preferred when several select the same number of tensors (query encoder over key
#: encoder in MoCo v2, base over momentum encoder in MoCo v3, teacher over student in DINO).
PREFERRED_PREFIXES = (
    "module.encoder_q.", "encoder_q.", "module.base_encoder.", "base_encoder.", "teacher.backbone.",
    "backbone.", "module.backbone.", "encoder.", "module.encoder.", "model.", "module.", "",
)  # fmt: skip

#: Checkpoint keys (after the prefix) that are heads or training state, dropped silently.
IGNORED_KEYS = (
    "fc.", "head.", "heads.", "classifier.", "projector.", "projection", "predictor.",
    "prototypes.", "decoder", "mask_token", "queue", "pre_logits.",
)  # fmt: skip

_NESTING_KEYS = ("state_dict", "model", "teacher", "model_state", "module", "net", "network")

_identity_cache: dict[tuple[str, int, int], str] = {}


class WeightsUnavailableError(RuntimeError):
    """Default weights could not be fetched (offline, moved URL); pass a local file instead."""


def file_identity(path: str | Path) -> str:
    """``"sha256:<first 16 hex digits>"`` of a file's content (cached per path, size, mtime)."""
    p = Path(path).resolve()
    stat = p.stat()
    key = (str(p), stat.st_size, stat.st_mtime_ns)
    if key not in _identity_cache:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _identity_cache[key] = f"sha256:{h.hexdigest()[:16]}"
    return _identity_cache[key]


def download(url: str, *, what: str, file_name: str | None = None) -> Path:
    """The file at ``url`` in torch.hub's checkpoint folder, downloaded once.

    Raises:
        WeightsUnavailableError: when the download fails; the message says how to pass the file.
    """
    name = file_name or Path(urllib.parse.urlparse(url).path).name
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    target = folder / name
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    logger.info("downloading %s weights from %s to %s", what, url, target)
    try:
        torch.hub.download_url_to_file(url, str(partial), progress=True)
    except Exception as err:  # urllib raises URLError, HTTPError, OSError, socket errors ...
        partial.unlink(missing_ok=True)
        raise WeightsUnavailableError(
            f"could not download the {what} weights from {url} ({type(err).__name__}: {err}). "
            f"Download the file on a machine with internet access and pass its path: "
            f"create_encoder(..., weights='/path/to/{name}'), or put it at {target}"
        ) from err
    partial.replace(target)
    return target


def resolve_weights(
    weights: str | Path | None, *, what: str, default_url: str | None, hint: str = ""
) -> Path | None:
    """The local file that ``weights`` names (``None`` for ``"random"``).

    ``None`` downloads ``default_url`` (an error with ``hint`` when there is none), an
    ``http(s)://`` URL is downloaded, anything else must be an existing file.
    """
    if weights is None:
        if default_url is None:
            raise WeightsUnavailableError(
                f"{what} has no default download; pass a local checkpoint file with "
                f"weights='/path/to/checkpoint.pth' (or weights='random'). {hint}".strip()
            )
        return download(default_url, what=what)
    text = str(weights)
    if text == "random":
        return None
    if text.startswith(("http://", "https://")):
        return download(text, what=what)
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{what}: weights={text!r} is neither None, 'random', a URL nor an existing file; "
            "pass the path of a checkpoint file"
        )
    return path


def unwrap_state_dict(obj: Any, *, source: str = "checkpoint") -> dict[str, Tensor]:
    """The flat ``{key: tensor}`` inside ``obj``, descending through the usual nesting keys."""
    for _ in range(8):
        if not isinstance(obj, Mapping):
            raise ValueError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
        inner = next((obj[k] for k in _NESTING_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
            if tensors:
                return tensors
            dicts = [v for v in obj.values() if isinstance(v, Mapping)]
            inner = dicts[0] if len(dicts) == 1 else None
        if inner is None:
            raise ValueError(
                f"{source}: no state dict found; top-level keys {sorted(map(str, obj))[:10]} "
                f"(looked for {list(_NESTING_KEYS)})"
            )
        obj = inner
    raise ValueError(f"{source}: state dict nested too deeply")


def select_prefix(
    state: Mapping[str, Tensor],
    target_keys: Sequence[str],
    *,
    prefix: str | None = None,
    preferred: Sequence[str] = (),
    source: str = "checkpoint",
) -> dict[str, Tensor]:
    """Keep the keys under the prefix that matches ``target_keys`` best, with it removed.

    Args:
        state: flat checkpoint state dict.
        target_keys: the model's state-dict keys.
        prefix: force this prefix (``""`` for none) instead of searching.
        preferred: prefixes tried first on ties, before :data:`PREFERRED_PREFIXES`.
    """
    if prefix is None:
        targets = set(target_keys)
        counts: dict[str, int] = {}
        for key in state:
            for cut in [0] + [i + 1 for i, c in enumerate(key) if c == "."]:
                if key[cut:] in targets:
                    counts[key[:cut]] = counts.get(key[:cut], 0) + 1
        if not counts:
            raise ValueError(
                f"{source}: no key matches the model under any prefix; checkpoint keys "
                f"{list(state)[:5]}..., model keys {list(target_keys)[:5]}..."
            )
        best = max(counts.values())
        tied = [p for p, c in counts.items() if c == best]
        order = [*preferred, *PREFERRED_PREFIXES]
        ranked = sorted(tied, key=lambda p: (order.index(p) if p in order else len(order), p))
        if len(ranked) > 1 and ranked[0] not in order:
            raise ValueError(
                f"{source}: prefixes {ranked} match {best} tensors each; choose one with "
                "prefix=... (e.g. create_encoder(name, weights=path, prefix=...))"
            )
        prefix = ranked[0]
    out = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    skipped = len(state) - len(out)
    if skipped:
        logger.debug("%s: prefix %r selected; %d other tensors ignored", source, prefix, skipped)
    return out


def load_into(
    model: nn.Module,
    state: Mapping[str, Tensor],
    *,
    source: str = "checkpoint",
    ignored: Sequence[str] = IGNORED_KEYS,
    optional: Sequence[str] = (),
) -> None:
    """Load ``state`` into ``model`` after checking every tensor is present with its shape.

    Keys the model lacks are dropped: silently when they start with one of ``ignored`` (heads),
    with a warning otherwise. ``num_batches_tracked`` and model keys starting with one of
    ``optional`` (a classifier that will be removed) may be missing.
    """
    own = model.state_dict()
    extra = [k for k in state if k not in own]
    unknown = [k for k in extra if not k.startswith(tuple(ignored))]
    if unknown:
        logger.warning(
            "%s: %d tensors not used by the model: %s", source, len(unknown), unknown[:8]
        )
    missing = [
        k
        for k in own
        if k not in state
        and not k.endswith("num_batches_tracked")
        and not k.startswith(tuple(optional))
    ]
    if missing:
        raise ValueError(
            f"{source}: {len(missing)} of the model's {len(own)} tensors are missing, e.g. "
            f"{missing[:5]}; is it a checkpoint of this architecture? (checkpoint keys: "
            f"{list(state)[:5]}...)"
        )
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if k in state]
    wrong = [w for w in wrong if w[1] != w[2]]
    if wrong:
        k, got, want = wrong[0]
        raise ValueError(
            f"{source}: {len(wrong)} tensors have the wrong shape, e.g. {k!r} is {got} in the "
            f"checkpoint but {want} in the model; is it a checkpoint of a different model size?"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def load_checkpoint(
    model: nn.Module,
    path: Path,
    *,
    what: str,
    prefix: str | None = None,
    preferred: Sequence[str] = (),
    convert: Callable[[dict[str, Tensor], Any], Mapping[str, Tensor]] | None = None,
) -> str:
    """Load the backbone in the weight file ``path`` into ``model``; return the file's identity.

    The state dict is unwrapped (:func:`unwrap_state_dict`), taken from under its key prefix
    (:func:`select_prefix` with ``prefix`` and ``preferred``), passed through
    ``convert(state, model)`` when given (e.g. timm's ViT ``checkpoint_filter_fn``) and loaded
    with every tensor checked (:func:`load_into`). Errors name ``what`` and the file.
    """
    source = f"{what} weights {str(path)!r}"
    state = unwrap_state_dict(read_weights_file(path), source=source)
    keys = list(model.state_dict())
    state = select_prefix(state, keys, prefix=prefix, preferred=preferred, source=source)
    load_into(model, state if convert is None else convert(dict(state), model), source=source)
    return file_identity(path)


def map_by_order(
    state: Mapping[str, Tensor], target: Mapping[str, Tensor], *, source: str = "checkpoint"
) -> dict[str, Tensor]:
    """Rename ``state``'s tensors to ``target``'s keys one-to-one, in order, checking shapes.

    For checkpoints of the same network written by another implementation (same tensors in the
    same order, different names). ``state`` may lack ``target``'s trailing tensors (a classifier
    it was saved without).
    """
    src = list(state.items())
    dst = list(target.items())
    if len(src) > len(dst) or not src:
        raise ValueError(
            f"{source}: {len(src)} tensors cannot map one-to-one onto the model's {len(dst)}; "
            "is it a checkpoint of this architecture?"
        )
    out: dict[str, Tensor] = {}
    for (src_key, value), (dst_key, ref) in zip(src, dst, strict=False):
        if value.shape != ref.shape:
            raise ValueError(
                f"{source}: tensor {len(out)} {src_key!r} has shape {tuple(value.shape)} but the "
                f"model's tensor {len(out)} {dst_key!r} has {tuple(ref.shape)}; the checkpoint "
                "is not of this architecture (or its tensors are in another order)"
            )
        out[dst_key] = value
    return out
