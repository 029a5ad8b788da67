"""k-nearest-neighbour mining by cosine similarity.

faiss (exact inner-product search on L2-normalised float32 vectors) is used when installed; a
block-wise torch matmul + top-k serves otherwise (and for tensors already on an accelerator).
The query itself is always dropped, also when exact duplicates tie with it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["mine_neighbours", "neighbour_accuracy"]

logger = logging.getLogger(__name__)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _drop_self(idx: np.ndarray, k: int) -> np.ndarray:
    """Remove each row's own index from ``idx`` (N, k+1) and keep the first ``k`` others."""
    n = idx.shape[0]
    own = idx == np.arange(n)[:, None]
    # rows where self was not returned (ties with duplicates) lose their last entry instead
    missing = ~own.any(axis=1)
    own[missing, -1] = True
    return idx[~own].reshape(n, idx.shape[1] - 1)[:, :k]


def _search_faiss(x: np.ndarray, k: int, block: int, bar: Any) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    out = np.empty((x.shape[0], k + 1), dtype=np.int64)
    for start in range(0, x.shape[0], block):
        _, idx = index.search(x[start : start + block], k + 1)
        out[start : start + block] = idx
        bar.update(len(idx))
    return out


def _search_torch(x: torch.Tensor, k: int, block: int, bar: Any) -> np.ndarray:
    out = torch.empty((x.shape[0], k + 1), dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], block):
        q = x[start : start + block]
        sims = q @ x.T
        # make sure a row's own entry wins ties with exact duplicates
        rows = torch.arange(q.shape[0], device=x.device)
        sims[rows, rows + start] = float("inf")
        out[start : start + block] = sims.topk(k + 1, dim=1).indices
        bar.update(q.shape[0])
    return out.cpu().numpy()


def mine_neighbours(
    features: np.ndarray | torch.Tensor,
    k: int = 4,
    *,
    block_size: int = 4096,
    backend: str = "auto",
    progress: bool = False,
) -> np.ndarray:
    """Return the indices of each sample's ``k`` nearest neighbours by cosine, shape (N, k).

    Args:
        features: (N, D) array or tensor; rows are L2-normalised internally (float32).
        k: neighbours per sample, excluding the sample itself; ``1 <= k < N``.
        block_size: queries per search block (bounds memory to ``block_size x N`` floats).
        backend: ``"faiss"``, ``"torch"`` or ``"auto"`` (torch for accelerator tensors, faiss when
            importable, else torch).
        progress: show a progress bar over the queries on stderr.
    """
    n = int(features.shape[0])
    if features.ndim != 2:
        raise ValueError(f"features should be 2-D (N, D), got shape {tuple(features.shape)}")
    if not 1 <= k < n:
        raise ValueError(f"k={k} neighbours needs 1 <= k < n_samples={n}")
    if backend not in {"auto", "faiss", "torch"}:
        raise ValueError(f"backend={backend!r}; expected 'auto', 'faiss' or 'torch'")
    on_accel = isinstance(features, torch.Tensor) and features.device.type != "cpu"
    if backend == "auto":
        backend = "torch" if on_accel else "faiss"
        if backend == "faiss":
            try:
                import faiss  # noqa: F401
            except ImportError:
                backend = "torch"
    if isinstance(features, torch.Tensor) and backend == "faiss":
        features = features.detach().cpu().numpy()
    with tqdm(total=n, desc="neighbours", unit="img", disable=not progress) as bar:
        if backend == "torch":
            t = torch.as_tensor(features).float()
            t = torch.nn.functional.normalize(t, dim=1)
            idx = _search_torch(t, k, block_size, bar)
        else:
            xn = _normalise(np.asarray(features))
            idx = _search_faiss(xn, k, block_size, bar)
    return _drop_self(idx, k)


def neighbour_accuracy(neighbours: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of (sample, neighbour) pairs that share a label (a quality check, needs labels)."""
    labels = np.asarray(labels)
    return float((labels[neighbours] == labels[:, None]).mean())
