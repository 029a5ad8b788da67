"""Loading batches for extraction: decode, resize, and prefetch on background threads."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from icbpl.data import ImageSource
from icbpl.features.augment import resize_batch

__all__ = ["load_batch", "prefetch_batches"]


def load_batch(
    source: ImageSource, array: np.ndarray | None, start: int, stop: int, size: int
) -> Tensor:
    """Images ``start:stop`` as ``(B, 3, size, size)`` float32 in [0, 1] on the CPU."""
    if array is not None:
        block = array[start:stop]
        if not (block.flags.writeable and block.flags.c_contiguous):
            block = np.array(block)  # read-only memory maps: torch warns on non-writable arrays
        chunk = torch.from_numpy(block).permute(0, 3, 1, 2)
        return resize_batch(chunk, size).contiguous()
    images = [source.load(i) for i in range(start, stop)]
    if all(im.shape == images[0].shape for im in images):
        return resize_batch(torch.stack(images), size).contiguous()
    return torch.cat([resize_batch(im.unsqueeze(0), size) for im in images]).contiguous()


def prefetch_batches(
    source: ImageSource, starts: list[int], step: int, size: int, workers: int
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start, images)`` for each start, decoded by ``workers`` threads ahead of use.

    On two cores one worker thread overlaps decoding and resizing with the forward pass (the
    forward pass releases the GIL); ``workers=0`` loads in the calling thread.
    """
    as_array = getattr(source, "as_array", None)
    array = as_array() if callable(as_array) else None
    n = len(source)

    def load(s: int) -> Tensor:
        return load_batch(source, array, s, min(n, s + step), size)

    if workers == 0:
        for s in starts:
            yield s, load(s)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="icbpl-load") as pool:
        pending: deque[tuple[int, Future[Tensor]]] = deque()
        try:
            for s in starts:
                pending.append((s, pool.submit(load, s)))
                if len(pending) > workers:
                    s0, fut = pending.popleft()
                    yield s0, fut.result()
            while pending:
                s0, fut = pending.popleft()
                yield s0, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()
