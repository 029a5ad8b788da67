"""Input checks at the public boundary, with errors that say what to do."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.utils import check_array

__all__ = ["check_features", "check_fit_inputs"]


def check_features(X: Any, *, n_features: int | None = None, name: str = "X") -> np.ndarray:
    """Return ``X`` as a C-contiguous float32 (N, D) array, or raise a clear error."""
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    # sklearn's checks give the standard messages for sparse, empty, object and 1-D input
    x = check_array(
        X, dtype=np.float32, ensure_all_finite=False, input_name=name, estimator="ICBPL"
    )
    bad = _bad_rows(x)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{name} has {len(rows)} row(s) with NaN or inf (first: {rows[:5].tolist()}); "
            "drop or impute them before clustering"
        )
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(
            f"{name} has {x.shape[1]} features, but ICBPL is expecting {n_features} features "
            "as input (the number it was fitted with)"
        )
    return np.ascontiguousarray(x)


def _bad_rows(x: np.ndarray, block: int = 16384) -> np.ndarray:
    """Rows with NaN or inf, checked block by block (a memory map is not read into RAM at once)."""
    bad = np.zeros(len(x), dtype=bool)
    for start in range(0, len(x), block):
        bad[start : start + block] = ~np.isfinite(x[start : start + block]).all(axis=1)
    return bad


def check_fit_inputs(
    X: Any,
    y: Any,
    views: Any,
    neighbours: Any,
    *,
    n_clusters: int,
    n_neighbours: int,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Validate everything ``ICBPL.fit`` receives; return (x, views (V,N,D), neighbours, y).

    The neighbours come back whole (the caller cuts them to ``n_neighbours`` columns; the SCAN
    warm start uses them all).
    """
    if not isinstance(n_clusters, int | np.integer) or n_clusters < 2:
        raise ValueError(f"n_clusters={n_clusters!r} should be an integer >= 2")
    x = check_features(X)
    n = x.shape[0]
    if n < n_clusters:
        raise ValueError(f"n_samples={n} should be >= n_clusters={n_clusters}; pass fewer clusters")
    v = None
    if views is not None:
        v = np.asarray(views.detach().cpu() if hasattr(views, "detach") else views, np.float32)
        if v.ndim == 2:
            v = v[None]
        if v.ndim != 3 or v.shape[1:] != x.shape:
            raise ValueError(
                f"views should have shape (V, {n}, {x.shape[1]}) to match X {x.shape}, "
                f"got {v.shape}"
            )
        if any(_bad_rows(view).any() for view in v):
            raise ValueError("views contain NaN or inf; recompute the view features")
        v = np.ascontiguousarray(v)
    nb = None
    if neighbours is not None:
        nb = np.asarray(neighbours)
        if nb.ndim != 2 or nb.shape[0] != n or not np.issubdtype(nb.dtype, np.integer):
            raise ValueError(
                f"neighbours should be an integer array of shape ({n}, K), got "
                f"{nb.shape} {nb.dtype}"
            )
        if nb.size and (nb.min() < 0 or nb.max() >= n):
            raise ValueError(
                f"neighbours hold indices outside [0, {n}); got {nb.min()}..{nb.max()}"
            )
        nb = nb.astype(np.int64)
    elif n_neighbours and n_neighbours >= n:
        raise ValueError(
            f"n_neighbours={n_neighbours} should be < n_samples={n}; lower n_neighbours"
        )
    labels = None
    if y is not None:
        labels = np.asarray(y)
        if labels.shape != (n,):
            raise ValueError(f"y should have shape ({n},), got {labels.shape}")
        labels = _integer_labels(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"y of dtype {labels.dtype} should hold integer class labels (Unknown label "
                "type; y only scores history_); encode them first, e.g. with "
                "sklearn.preprocessing.LabelEncoder"
            )
    return x, v, nb, labels


def _integer_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` as int64 when they are whole numbers (also as floats or objects), else as is."""
    if labels.dtype == object and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in labels
    ):
        return labels.astype(np.int64)
    if np.issubdtype(labels.dtype, np.floating) and np.isfinite(labels).all():
        if (labels == np.round(labels)).all():
            return labels.astype(np.int64)
    return labels
