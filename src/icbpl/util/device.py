"""Device and numeric-precision helpers shared by extraction, training and fine-tuning.

``resolve_device("auto")`` picks CUDA, then Apple MPS, then the CPU. ``resolve_precision``
turns ``"auto"`` into a concrete choice and ``autocast_context`` applies it:

- CUDA: ``"auto"`` is bf16 autocast when the GPU supports bf16, else fp32.
- CPU: ``"auto"`` is fp32 (bf16 without native instructions is emulated and far slower);
  ``"bf16"`` asks for it explicitly.
- MPS: ``"auto"`` is fp32 (autocast support on MPS varies across torch versions).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Literal

import torch

__all__ = [
    "Precision",
    "autocast_context",
    "cpu_has_native_bf16",
    "cpu_threads",
    "peak_memory",
    "requested_threads",
    "resolve_device",
    "resolve_precision",
    "seeded",
    "synchronize",
    "torch_threads",
]

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "auto"]
_PRECISIONS = ("fp32", "bf16", "auto")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn a device request into an available `torch.device`.

    Args:
        device: ``"auto"`` or ``None`` (CUDA if available, else MPS, else CPU), ``"cpu"``,
            ``"cuda"``, ``"cuda:<index>"``, ``"mps"``, or a `torch.device`.

    Raises:
        ValueError: the string is not a device name.
        RuntimeError: the requested device is not available on this machine (the message lists
            what is).
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device.strip().lower())
    except (RuntimeError, ValueError) as err:
        raise ValueError(
            f"device={device!r} is not a device name; expected 'auto', 'cpu', 'cuda', "
            "'cuda:<index>' or 'mps'"
        ) from err
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise RuntimeError(
                f"device={device!r} was requested but CUDA is not available ({_available()}); "
                "pass device='cpu' or 'auto'"
            )
        if dev.index is not None and dev.index >= count:
            raise RuntimeError(
                f"device={device!r} was requested but only {count} CUDA device(s) exist "
                f"(cuda:0..cuda:{count - 1})"
            )
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise RuntimeError(
                f"device={device!r} was requested but MPS is not available ({_available()}); "
                "pass device='cpu' or 'auto'"
            )
        return dev
    raise ValueError(
        f"device={device!r} is not supported; expected 'auto', 'cpu', 'cuda', 'cuda:<index>' "
        "or 'mps'"
    )


def _available() -> str:
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return "available: " + ", ".join(names)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX-512-BF16 or AMX) that oneDNN can use."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(device: torch.device, precision: str = "auto") -> Literal["fp32", "bf16"]:
    """The concrete precision for ``precision`` on ``device`` (see the module docstring).

    Raises:
        ValueError: ``precision`` is not ``"fp32"``, ``"bf16"`` or ``"auto"``.
    """
    if precision not in _PRECISIONS:
        raise ValueError(f"precision={precision!r} should be one of {', '.join(_PRECISIONS)}")
    if precision == "fp32":
        return "fp32"
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_native_bf16():
            logger.warning(
                "bf16 on a CPU without AVX-512-BF16/AMX is emulated and usually much slower "
                "than fp32; precision='auto' picks fp32 here"
            )
        return "bf16"
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


@contextlib.contextmanager
def autocast_context(device: torch.device | str, precision: str = "auto") -> Iterator[str]:
    """Context manager running its block in ``precision`` on ``device``; yields the precision used.

    fp32 is a no-op context; bf16 is `torch.autocast` with ``dtype=torch.bfloat16`` (matmuls and
    convolutions in bf16, reductions in fp32).
    """
    dev = torch.device(device) if isinstance(device, str) else device
    resolved = resolve_precision(dev, precision)
    if resolved == "fp32":
        yield resolved
        return
    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
        yield resolved


_REQUESTED: contextvars.ContextVar[int | None] = contextvars.ContextVar("threads", default=None)


def requested_threads() -> int | None:
    """The thread count an enclosing :func:`cpu_threads` block asked for (``--threads``), or
    ``None``: then training picks its own (:func:`icbpl.model.training.train_head`)."""
    return _REQUESTED.get()


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` CPU threads for torch (and so ONNX Runtime, which follows
    torch's count) and for the BLAS / OpenMP pools (scikit-learn, faiss); ``None``: unchanged.

    On a machine whose cores are busy with other jobs, torch's per-operation thread pool waits
    for descheduled threads: training a small head with 2 threads while another job used both
    cores took 0.8 s per step instead of 0.02 s with 1 thread.
    """
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    token = _REQUESTED.set(n)
    try:
        with torch_threads(n), threadpool_limits(limits=n):
            yield
    finally:
        _REQUESTED.reset(token)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads, then restore the count (``None``: unchanged)."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed torch's global generators (the CPU's, and ``device``'s on CUDA) for the block and
    restore the caller's state after."""
    devices = [device.index or 0] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def peak_memory(device: torch.device) -> int:
    """Peak allocated bytes on a CUDA device since the last reset (0 elsewhere)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return 0


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (for honest timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
