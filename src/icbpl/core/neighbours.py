"""k-nearest-neighbour mining by cosine similarity, exact or approximate by size.

faiss on L2-normalised float32 vectors is used when installed; a block-wise torch matmul + top-k
serves otherwise (and for tensors already on an accelerator). ``method="auto"`` searches exactly
(``IndexFlatIP``) while ``N^2 * D`` stays under :data:`EXACT_BUDGET` multiply-adds, and above it
by an inverted file with exact cosines (``method="ivf"``): spherical k-means on a sample gives
``N / 256`` lists, each row is stored in the list of its nearest centroid (found through an HNSW
graph of the centroids) and compared, by a BLAS product, with the members of its 16 nearest
lists (:func:`ivf_params`), so the work per query does not grow with N. The ivf search keeps no
copy of the features: rows are read and normalised block by block (memory-mapped features stay
on disk), besides the (N, k) result and (N, 16) list numbers. The exact search's faiss index
holds one normalised copy (at most ``sqrt(EXACT_BUDGET * D)`` rows). The query itself is always
dropped, also when exact duplicates tie with it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["EXACT_BUDGET", "ivf_params", "mine_neighbours", "recall"]

logger = logging.getLogger(__name__)

EXACT_BUDGET = 4e11
"""``N * N * D`` up to which ``method="auto"`` searches exactly (about 18,000 rows at D = 1280,
40,000 at D = 256; 9 CPU-seconds at 10,000 x 1280, see docs/BENCHMARKS.md)."""

_METHODS = ("auto", "exact", "ivf")


def _normalised(x: Any, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``x`` as L2-normalised float32 (a copy of the block only)."""
    block = np.array(x[start:stop], dtype=np.float32, order="C")
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    block /= np.maximum(norms, 1e-12)
    return block


def _drop_self(idx: np.ndarray, k: int, offset: int = 0) -> np.ndarray:
    """Remove each row's own index from ``idx`` (B, k+1) and keep the first ``k`` others.

    Row ``r`` is sample ``offset + r``; where it was not returned (ties with duplicates, or an
    approximate search) the row loses its last entry instead.
    """
    n = idx.shape[0]
    own = idx == (offset + np.arange(n))[:, None]
    first = own & (np.cumsum(own, axis=1) == 1)  # a row's own index at most once
    missing = ~first.any(axis=1)
    first[missing, -1] = True
    return idx[~first].reshape(n, idx.shape[1] - 1)[:, :k]


def ivf_params(n: int) -> tuple[int, int]:
    """``(nlist, nprobe)`` of the inverted-file index for ``n`` rows.

    ``nlist = n / 256`` lists (between 16 and 65,536) and ``nprobe = 16`` probes, so a query scans
    about 4,096 rows whatever ``n``; the lists' centroids are found through an HNSW graph, so
    the search grows about linearly with ``n``. Recall@4 against exact search is in
    docs/BENCHMARKS.md.
    """
    nlist = int(min(65536, max(16, round(n / 256))))
    return nlist, min(nlist, 16)


def _flat_index(x: Any, block: int) -> Any:
    import faiss

    index = faiss.IndexFlatIP(int(x.shape[1]))
    for start in range(0, x.shape[0], block):
        index.add(_normalised(x, start, start + block))
    return index


def _centroids(x: Any, nlist: int, block: int, seed: int) -> np.ndarray:
    """Spherical k-means centroids (nlist, D) of a sample of ``32 * nlist`` normalised rows."""
    import faiss

    n, d = int(x.shape[0]), int(x.shape[1])
    n_train = min(n, 32 * nlist)
    rows = np.sort(np.random.default_rng(seed).choice(n, n_train, replace=False))
    sample = np.concatenate(
        [_normalised(x[rows[i : i + block]], 0, block) for i in range(0, n_train, block)]
    )
    km = faiss.Kmeans(
        d, nlist, niter=10, seed=seed, spherical=True, min_points_per_centroid=5, verbose=False
    )
    km.train(sample)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def _probes(x: Any, centroids: np.ndarray, nprobe: int, block: int) -> np.ndarray:
    """Each row's ``nprobe`` nearest centroids (N, nprobe), nearest first (an HNSW search)."""
    import faiss

    graph = faiss.IndexHNSWFlat(centroids.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efSearch = max(64, 2 * nprobe)
    graph.add(centroids)
    out = np.empty((int(x.shape[0]), nprobe), dtype=np.int32)
    for start in range(0, x.shape[0], block):
        _, out[start : start + block] = graph.search(_normalised(x, start, start + block), nprobe)
    return out


def _scan_list(
    x: Any,
    members: np.ndarray,
    queries: np.ndarray,
    best: tuple[np.ndarray, np.ndarray],
    block: int,
) -> None:
    """Exact cosines of ``queries`` against one list's ``members`` (both sorted), merged into
    the running top ``best = (sims (N, k+1), indices (N, k+1))`` in place."""
    best_s, best_i = best
    m = torch.from_numpy(_normalised(x[members], 0, len(members)))
    mem = torch.from_numpy(members)
    keep = best_s.shape[1]
    for start in range(0, len(queries), block):
        qs = queries[start : start + block]
        sims = torch.from_numpy(_normalised(x[qs], 0, len(qs))) @ m.T
        pos = np.minimum(np.searchsorted(members, qs), len(members) - 1)
        own = np.flatnonzero(members[pos] == qs)
        sims[own, pos[own]] = np.inf  # the query itself wins ties with exact duplicates
        vals, part = sims.topk(min(keep, len(members)), dim=1)
        cs = torch.cat([torch.from_numpy(best_s[qs]), vals], dim=1)
        ci = torch.cat([torch.from_numpy(best_i[qs]), mem[part]], dim=1)
        top_s, top = cs.topk(keep, dim=1)
        best_s[qs], best_i[qs] = top_s.numpy(), ci.gather(1, top).numpy()


def _search_ivf(x: Any, k: int, block: int, seed: int, bar: Any) -> np.ndarray:
    """Inverted-file search with exact cosines: each row is stored in the list of its nearest
    centroid and compared with the members of its ``nprobe`` nearest lists."""
    n = int(x.shape[0])
    nlist, nprobe = ivf_params(n)
    probes = _probes(x, _centroids(x, nlist, block, seed), nprobe, block)
    home = np.argsort(probes[:, 0], kind="stable")
    home_at = np.concatenate([[0], np.cumsum(np.bincount(probes[:, 0], minlength=nlist))])
    flat = probes.ravel()
    asked_at = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=nlist))])
    asked = np.argsort(flat, kind="stable")
    del probes, flat
    asked //= nprobe  # the query row of each (row, probe) pair
    best = (np.full((n, k + 1), -np.inf, np.float32), np.full((n, k + 1), -1, np.int64))
    for lst in range(nlist):
        members = home[home_at[lst] : home_at[lst + 1]]
        if len(members):
            _scan_list(x, members, asked[asked_at[lst] : asked_at[lst + 1]], best, block)
        bar.update(len(members))
    logger.info("ivf search: %d lists, %d probed per row", nlist, nprobe)
    short = np.flatnonzero((best[1] < 0).any(axis=1))
    best[0][short], best[1][short] = -np.inf, -1
    for start in range(0, len(short), block):  # rows whose probed lists held too few rows
        qs = short[start : start + block]
        for s in range(0, n, block):
            _scan_list(x, np.arange(s, min(n, s + block)), qs, best, block)
    return _drop_self(best[1], k)  # topk keeps each row sorted by similarity, self first


def _search_faiss(x: Any, k: int, block: int, bar: Any) -> np.ndarray:
    index = _flat_index(x, block)
    n = int(x.shape[0])
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, block):
        _, idx = index.search(_normalised(x, start, start + block), k + 1)
        out[start : start + len(idx)] = _drop_self(idx, k, offset=start)
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
    return _drop_self(out.cpu().numpy(), k)


def _resolve_method(method: str, n: int, d: int) -> str:
    if method == "auto":
        return "exact" if float(n) * n * d <= EXACT_BUDGET else "ivf"
    return method


def mine_neighbours(
    features: np.ndarray | torch.Tensor,
    k: int = 4,
    *,
    block_size: int = 4096,
    backend: str = "auto",
    method: str = "auto",
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Return the indices of each sample's ``k`` nearest neighbours by cosine, shape (N, k).

    Args:
        features: (N, D) array (a memory map stays one: it is read block by block) or tensor;
            rows are L2-normalised internally (float32).
        k: neighbours per sample, excluding the sample itself; ``1 <= k < N``.
        block_size: queries per search block (bounds memory to ``block_size`` rows at a time).
        backend: ``"faiss"``, ``"torch"`` or ``"auto"`` (torch for accelerator tensors, faiss when
            importable, else torch). The torch backend is always exact.
        method: ``"exact"``, ``"ivf"`` (approximate inverted-file search with exact re-ranking,
            faiss only) or ``"auto"``: exact while ``N^2 D <= EXACT_BUDGET``, else ``"ivf"``.
        seed: seed of the ivf index's training sample and k-means.
        progress: show a progress bar over the queries on stderr.
    """
    n = int(features.shape[0])
    if features.ndim != 2:
        raise ValueError(f"features should be 2-D (N, D), got shape {tuple(features.shape)}")
    if not 1 <= k < n:
        raise ValueError(f"k={k} neighbours needs 1 <= k < n_samples={n}")
    if backend not in {"auto", "faiss", "torch"}:
        raise ValueError(f"backend={backend!r}; expected 'auto', 'faiss' or 'torch'")
    if method not in _METHODS:
        raise ValueError(f"method={method!r}; expected one of {', '.join(_METHODS)}")
    on_accel = isinstance(features, torch.Tensor) and features.device.type != "cpu"
    if backend == "auto":
        backend = "torch" if on_accel else "faiss"
        if backend == "faiss":
            try:
                import faiss  # noqa: F401
            except ImportError:
                backend = "torch"
    method = _resolve_method(method, n, int(features.shape[1]))
    if backend == "torch" and method == "ivf":
        raise ValueError("method='ivf' needs backend='faiss' (pip install faiss-cpu)")
    if isinstance(features, torch.Tensor) and backend == "faiss":
        features = features.detach().cpu().numpy()
    with tqdm(total=n, desc="neighbours", unit="img", disable=not progress) as bar:
        if backend == "torch":
            t = torch.as_tensor(features).float()
            t = torch.nn.functional.normalize(t, dim=1)
            return _search_torch(t, k, block_size, bar)
        if method == "ivf":
            return _search_ivf(features, k, block_size, seed, bar)
        return _search_faiss(features, k, block_size, bar)


def recall(approximate: np.ndarray, exact: np.ndarray) -> float:
    """Fraction of the exact neighbours (N, k) that the approximate ones (N, k) also list."""
    if approximate.shape != exact.shape:
        raise ValueError(f"shapes differ: {approximate.shape} vs {exact.shape}")
    k = exact.shape[1]
    hits = (approximate[:, :, None] == exact[:, None, :]).any(axis=1).sum()
    return float(hits) / (exact.shape[0] * k)
