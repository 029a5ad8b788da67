"""Feature extraction with a resumable memory-mapped cache (see docs/DESIGN.md, "Features").

>>> from icbpl.features import extract_features
>>> fs = extract_features(encoder, source, views=2, cache_dir="runs/cache")
>>> fs.features.shape, fs.views.shape          # (N, D), (2, N, D)

Backends: PyTorch (any device, fp32 or bf16) and ONNX Runtime (CPU, fp32), chosen by
``backend="auto"`` from measurements (see :func:`extract_features`).
"""

from __future__ import annotations

from icbpl.features._backends import weights_digest
from icbpl.features._cache import RowCache, cache_key
from icbpl.features._extract import VIEW_BLOCK, FeatureSet, extract_features
from icbpl.features._inventory import CacheEntry, cache_entries, clear_cache

__all__ = [
    "VIEW_BLOCK",
    "CacheEntry",
    "FeatureSet",
    "RowCache",
    "cache_entries",
    "cache_key",
    "clear_cache",
    "extract_features",
    "weights_digest",
]
