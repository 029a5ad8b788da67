"""Runners that turn a batch of preprocessed images into features: PyTorch or ONNX Runtime.

A runner is called with ``(B, 3, S, S)`` float32 images in [0, 1] (on the extraction device) and
returns ``(B, D)`` float32 features on the CPU. The encoder given by the caller is never modified:
a copy is moved or re-laid-out when needed.

ONNX Runtime is the faster CPU runner (about 3x PyTorch's; docs/notes/encoders.md).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from icbpl.features._cache import cache_key
from icbpl.util.atomic import atomic_write_text
from icbpl.util.device import autocast_context

__all__ = [
    "EncoderLike",
    "OnnxRunner",
    "TorchRunner",
    "choose_backend",
    "device_of",
    "import_onnxruntime",
    "make_runner",
    "weights_digest",
]

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
#: `OnnxRunner` splits a batch into concurrent parts of at least this many images.
MIN_PART = 8
#: ... and of at most this many: ONNX Runtime's peak memory grows with the images of one run
#: (efficientnet_lite2 at 192 px: 1.8 GB at 32, 6.8 GB at 256 images a batch, no faster).
MAX_PART = 32
#: ``backend="auto"`` exports to ONNX only for at least this many images (export takes seconds).
AUTO_ONNX_MIN_IMAGES = 1000


class EncoderLike(Protocol):
    """What extraction needs from an encoder (`icbpl.encoders.Encoder` satisfies it)."""

    config: Any
    training: bool

    def encode(self, images: Tensor) -> Tensor:
        """``(B, 3, S, S)`` in [0, 1] -> ``(B, D)``."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """Module parameters."""
        ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Module state."""
        ...


def weights_digest(encoder: EncoderLike) -> str:
    """SHA-256 (first 32 hex) of the encoder's parameters and buffers, names, dtypes and shapes.

    Covers what ``config.weights`` cannot: random initialisations and fine-tuned weights.
    """
    h = hashlib.sha256()
    for name, value in encoder.state_dict().items():
        if not isinstance(value, Tensor):
            continue
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(value.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def device_of(module: EncoderLike) -> torch.device:
    """Device of the first parameter (the CPU for a module without parameters)."""
    param = next(iter(module.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


@contextlib.contextmanager
def _eval(module: nn.Module) -> Iterator[nn.Module]:
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


class TorchRunner:
    """PyTorch forward in ``precision`` on ``device``, optionally with channels_last."""

    name = "torch"

    def __init__(
        self, encoder: EncoderLike, device: torch.device, precision: str, channels_last: bool
    ) -> None:
        module: nn.Module = encoder  # type: ignore[assignment]
        if device_of(encoder) != device or channels_last:
            module = copy.deepcopy(module).to(device)
            if channels_last:
                module = module.to(memory_format=torch.channels_last)
        self.module = module
        self.device = device
        self.precision = precision
        self.channels_last = channels_last

    def __call__(self, images: Tensor) -> Tensor:
        """Features ``(B, D)`` float32 on the CPU."""
        x = images.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            _eval(self.module),
            autocast_context(self.device, self.precision),
        ):
            out = self.module.encode(x)  # type: ignore[operator]
        return out.float().cpu()


def import_onnxruntime() -> Any:
    """Import onnxruntime and onnx, or raise an ImportError saying how to install them."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            "backend='onnx' needs onnx and onnxruntime, which `pip install icbpl` brings: "
            "pip install onnx onnxruntime"
        ) from err
    return onnxruntime


class _Encode(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, images: Tensor) -> Tensor:
        return self.encoder.encode(images)  # type: ignore[operator]


def export_onnx(encoder: EncoderLike, path: Path, input_size: int) -> None:
    """Export ``encoder.encode`` (fp32, CPU, dynamic batch) to ``path``."""
    import_onnxruntime()
    module = copy.deepcopy(encoder).to("cpu").float().eval()  # type: ignore[attr-defined]
    example = torch.rand(2, 3, input_size, input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            _Encode(module),
            (example,),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            opset_version=ONNX_OPSET,
        )


class OnnxRunner:
    """ONNX Runtime (CPU execution provider, fp32) over an exported ``encoder.encode``.

    A batch is split into up to ``threads`` parts (at least MIN_PART images each; more where a
    part would exceed MAX_PART images) that run ``threads`` at a time, each on one thread of a
    session with one intra-op thread, instead of one run over ``threads`` intra-op threads:
    the threads then meet once per part rather than after every operator, so a core taken
    away by other work (the decoding thread, another process) stalls one part instead of every
    operator (benchmarks/bench_extraction.py).
    Results are the same rows in the same order.

    An export is checked against PyTorch fp32 on two random images (cosine >= 0.9999 and a
    small maximum difference) once per cache key: a new one before it is renamed into place; a
    cached one unless ``<export>.verified.json`` records that check for the file's exact
    SHA-256 (so a replaced or altered export is checked again; the check's first PyTorch call
    costs seconds on a small CPU). A cached export that fails the check or that ONNX Runtime
    cannot load is redone.
    """

    name = "onnx"

    def __init__(
        self, encoder: EncoderLike, path: Path, input_size: int, threads: int | None = None
    ) -> None:
        self._ort = import_onnxruntime()
        self.path = path
        #: concurrent parts of a batch (default: torch's CPU threads)
        self.threads = max(1, int(threads or torch.get_num_threads()))
        if path.exists():
            try:
                self.session = self._session(path)
                if not _is_verified(path):
                    self._mark_verified(self._verify(encoder, input_size))
                return
            except Exception as err:
                warnings.warn(
                    f"cached ONNX export {path} cannot be used ({err}); exporting again",
                    RuntimeWarning,
                    stacklevel=2,
                )
        logger.info("exporting %s to ONNX at %s", encoder.config.name, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            export_onnx(encoder, tmp, input_size)
            self.session = self._session(tmp)
            check = self._verify(encoder, input_size)
            os.replace(tmp, path)
            self._mark_verified(check)
        finally:
            tmp.unlink(missing_ok=True)

    def _mark_verified(self, check: dict[str, float]) -> None:
        """Record that the export at ``self.path`` passed `_verify` (with its SHA-256)."""
        marker = {"sha256": _file_sha256(self.path), **check}
        atomic_write_text(_marker(self.path), json.dumps(marker))

    def _session(self, path: Path) -> Any:
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = 1  # concurrency comes from the parts (see the class)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return self._ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: Tensor) -> Tensor:
        """Features ``(B, D)`` float32 on the CPU."""
        x = np.ascontiguousarray(images.detach().cpu().float().numpy())
        parts = min(self.threads, max(1, len(x) // MIN_PART))
        parts = max(parts, -(-len(x) // MAX_PART))
        if parts == 1:
            (out,) = self.session.run(["features"], {"images": x})
            return torch.from_numpy(out)
        bounds = np.linspace(0, len(x), parts + 1).astype(int)
        workers = min(parts, self.threads)
        with ThreadPoolExecutor(workers, thread_name_prefix="icbpl-onnx") as pool:
            outs = list(
                pool.map(
                    lambda lo, hi: self.session.run(["features"], {"images": x[lo:hi]})[0],
                    bounds[:-1],
                    bounds[1:],
                )
            )
        return torch.from_numpy(np.concatenate(outs))

    def _verify(self, encoder: EncoderLike, input_size: int) -> dict[str, float]:
        x = torch.rand(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
        module = copy.deepcopy(encoder).to("cpu").float()  # type: ignore[attr-defined]
        with torch.inference_mode(), _eval(module):
            ref = module.encode(x).float()
        got = self(x)
        cos = torch.nn.functional.cosine_similarity(got, ref, dim=1).min().item()
        diff = (got - ref).abs().max().item()
        tol = 1e-3 * max(1.0, ref.abs().max().item())
        if not (cos >= 0.9999 and diff <= tol):
            raise RuntimeError(
                f"the ONNX export of {encoder.config.name} disagrees with PyTorch "
                f"(cosine {cos:.6f}, max abs diff {diff:.3g} > {tol:.3g}); use backend='torch'"
            )
        logger.info("ONNX export verified: cosine %.7f, max abs diff %.2e", cos, diff)
        return {"cosine": cos, "max_abs_diff": diff}


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_verified(path: Path) -> bool:
    """Whether ``path``'s marker records a passed check of exactly this file."""
    try:
        marker = json.loads(_marker(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("sha256") == _file_sha256(path)


def choose_backend(backend: str, device: torch.device, precision: str, images: int) -> str:
    """The backend to use: ``"torch"`` or ``"onnx"`` (see `extract_features`)."""
    if backend == "torch":
        return "torch"
    fits = device.type == "cpu" and precision == "fp32"
    if backend == "onnx":
        if not fits:
            raise ValueError(
                f"backend='onnx' runs fp32 on the CPU, got device={device} "
                f"precision={precision!r}; pass device='cpu' and precision='fp32' (or 'auto'), "
                "or backend='torch'"
            )
        import_onnxruntime()
        return "onnx"
    if not fits or images < AUTO_ONNX_MIN_IMAGES:
        return "torch"
    try:
        import_onnxruntime()
    except ImportError:
        logger.info("onnxruntime is not installed: using PyTorch (pip install onnxruntime onnx)")
        return "torch"
    return "onnx"


def make_runner(
    chosen: str,
    backend: str,
    encoder: EncoderLike,
    identity: dict[str, Any],
    onnx_dir: Path,
    device: torch.device,
    precision: str,
    channels_last: bool,
) -> TorchRunner | OnnxRunner:
    """Build the runner; with ``backend="auto"`` a failed ONNX export falls back to PyTorch."""
    if chosen == "onnx":
        fields = {**identity, "torch": torch.__version__, "opset": ONNX_OPSET}
        path = onnx_dir / f"encoder-{cache_key(fields)[:24]}.onnx"
        try:
            return OnnxRunner(encoder, path, int(encoder.config.input_size))
        except Exception as err:
            if backend == "onnx":
                raise
            logger.warning("ONNX backend unavailable (%s); falling back to PyTorch", err)
    return TorchRunner(encoder, device, precision, channels_last)
