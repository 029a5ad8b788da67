"""Read a results folder written by ``icbpl cluster`` into one validated `Results` object."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from icbpl.util.csvcell import restore_cell

logger = logging.getLogger(__name__)

ASSIGNMENTS = "assignments.csv"
LATENT = "latent.npy"
SUMMARY = "summary.json"
FEATURE_CENTROIDS = "feature_centroids.npy"
_REQUIRED_COLUMNS = ("id", "path", "cluster", "score")


class ReportError(ValueError):
    """A results folder that cannot be reported on; the message says what is wrong and how to
    fix it."""


@dataclass(frozen=True, eq=False)
class Results:
    """The contents of a results folder (see docs/DESIGN.md and `load_results`).

    Attributes:
        results_dir: the folder read.
        ids: one identifier per row of ``assignments.csv``.
        paths: absolute image paths, ``""`` where unknown (array datasets).
        clusters: ``(N,)`` int64 cluster index of each row, in ``[0, n_clusters)``.
        scores: ``(N,)`` float64 cosine to the assigned centroid (higher = more central).
        labels: ``(N,)`` int64 class index, ``-1`` where a row has no label; ``None`` without a
            ``label`` column.
        latent: ``(N, d)`` latent features (memory-mapped), or ``None`` when ``latent.npy`` is
            absent.
        n_clusters: number of clusters, including empty ones.
        class_names: one name per class index, or ``None``.
        metrics: ACC/NMI/ARI from ``summary.json``, or ``None``.
        skipped: ``(path, reason)`` of inputs the run left out.
        summary: the whole ``summary.json`` (``{}`` when absent).
        features: ``(N, D)`` encoder features of the rows (memory-mapped from the feature cache
            that ``summary.json`` names, or given to `load_results`), or ``None``.
        features_note: where the features came from, or why there are none.
        feature_centroids: ``(n_clusters, D)`` from ``feature_centroids.npy``, or ``None``.
    """

    results_dir: Path
    ids: list[str]
    paths: list[str]
    clusters: np.ndarray
    scores: np.ndarray
    labels: np.ndarray | None
    latent: np.ndarray | None
    n_clusters: int
    class_names: list[str] | None
    metrics: dict[str, float] | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    features: np.ndarray | None = None
    features_note: str = ""
    feature_centroids: np.ndarray | None = None

    def __len__(self) -> int:
        """Number of clustered images (rows of ``assignments.csv``)."""
        return len(self.ids)

    def sizes(self) -> np.ndarray:
        """``(n_clusters,)`` int64 number of images in each cluster."""
        return np.bincount(self.clusters, minlength=self.n_clusters).astype(np.int64)


def _parse_int(value: str, column: str, line: int, path: Path) -> int:
    try:
        return int(value)
    except ValueError:
        raise ReportError(
            f"{path}, line {line}: column {column!r} should be an integer, got {value!r}"
        ) from None


def _parse_float(value: str, line: int, path: Path) -> float:
    try:
        return float(value) if value.strip() else math.nan
    except ValueError:
        raise ReportError(
            f"{path}, line {line}: column 'score' should be a number, got {value!r}"
        ) from None


def _read_assignments(
    path: Path,
) -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray | None]:
    if not path.is_file():
        raise ReportError(
            f"{path} not found; pass the folder written by `icbpl cluster ... --out DIR`"
        )
    ids: list[str] = []
    paths: list[str] = []
    clusters: list[int] = []
    scores: list[float] = []
    labels: list[int] = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in _REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ReportError(
                f"{path} lacks column(s) {', '.join(missing)}; expected a header "
                f"'id,path,cluster,score[,label]', got {','.join(header)!r}"
            )
        has_label = "label" in header
        for row in reader:
            line = reader.line_num
            ids.append(restore_cell(row["id"] or ""))  # undo the CSV-injection guard
            paths.append(restore_cell(row["path"] or ""))
            clusters.append(_parse_int(row["cluster"] or "", "cluster", line, path))
            scores.append(_parse_float(row["score"] or "", line, path))
            if has_label:
                raw = (row["label"] or "").strip()
                labels.append(_parse_int(raw, "label", line, path) if raw else -1)
    cl = np.asarray(clusters, dtype=np.int64)
    if cl.size and cl.min() < 0:
        raise ReportError(f"{path}: cluster indices should be >= 0, got min={cl.min()}")
    lab = np.asarray(labels, dtype=np.int64) if has_label else None
    if lab is not None and not (lab >= 0).any():
        lab = None  # a label column without any label
    return ids, paths, cl, np.asarray(scores, dtype=np.float64), lab


def _read_summary(path: Path) -> dict[str, Any]:
    if not path.is_file():
        logger.warning("%s not found; the report derives what it can from assignments.csv", path)
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ReportError(f"{path} should hold a JSON object, got {type(data).__name__}")
    return data


def _read_latent(path: Path, n: int) -> np.ndarray | None:
    if not path.is_file():
        logger.warning("%s not found; the report will have no 2-D map", path)
        return None
    latent = np.load(path, mmap_mode="r", allow_pickle=False)
    if latent.ndim != 2 or latent.shape[0] != n:
        raise ReportError(
            f"{path} has shape {latent.shape} but assignments.csv has {n} rows; expected "
            f"({n}, d) with rows in the same order (re-run `icbpl cluster`)"
        )
    return latent


def _cached_features(summary: dict[str, Any], n: int) -> tuple[np.ndarray | None, str]:
    """The run's features from the feature cache named in ``summary.json``, or why not."""
    cache = (summary.get("features") or {}).get("cache") or {}
    name = cache.get("features") if isinstance(cache, dict) else None
    if not isinstance(name, str) or not name:
        return None, "the run kept no feature cache (--no-cache, or an older or fine-tuned run)"
    path = Path(name)
    if not path.is_file():
        return None, f"the feature cache {path.name} is gone (`icbpl cache clear`?)"
    try:
        rows = json.loads(path.with_suffix(".json").read_text("utf-8"))["rows_complete"][0]
        feats = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        return None, f"the feature cache {path.name} cannot be read ({type(exc).__name__})"
    if feats.ndim != 2 or feats.shape[0] != n or int(rows) < n:
        return None, f"the feature cache {path.name} does not hold {n} complete rows"
    return feats, f"the encoder features (feature cache {path.name})"


def _check_features(features: Any, n: int) -> np.ndarray:
    feats = np.asarray(features)
    if feats.ndim != 2 or feats.shape[0] != n:
        raise ReportError(
            f"features have shape {feats.shape} but assignments.csv has {n} rows; expected "
            f"({n}, D) with rows in the same order"
        )
    return feats


def _matches_centroids(feats: np.ndarray, clusters: np.ndarray, cents: np.ndarray) -> bool:
    """Whether ``feats`` reproduce the run's saved feature centroids (the same rows)."""
    from icbpl.core.novelty import feature_centroids

    if cents.shape != (cents.shape[0], feats.shape[1]) or clusters.max(initial=0) >= len(cents):
        return False
    return bool(np.allclose(feature_centroids(feats, clusters, len(cents)), cents, atol=1e-3))


def _read_centroids(path: Path, n_clusters: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    cents = np.load(path, allow_pickle=False)
    if cents.ndim != 2 or cents.shape[0] != n_clusters:
        logger.warning("%s has shape %s, not (%d, D): ignored", path, cents.shape, n_clusters)
        return None
    return np.asarray(cents, dtype=np.float32)


def _metrics(summary: dict[str, Any]) -> dict[str, float] | None:
    raw = summary.get("metrics")
    if not isinstance(raw, dict):
        return None
    out = {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)}
    return out or None


def _skipped(summary: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for item in summary.get("skipped") or []:
        if isinstance(item, list | tuple) and len(item) >= 2:
            out.append((str(item[0]), str(item[1])))
        else:
            out.append((str(item), ""))
    return out


def load_results(results_dir: str | os.PathLike[str], *, features: Any = None) -> Results:
    """Read and check ``assignments.csv``, ``latent.npy`` and ``summary.json`` of a results folder.

    ``latent.npy`` and ``summary.json`` are optional (the report then has no map, and the cluster
    count is taken from the largest cluster index); ``assignments.csv`` is required. The encoder
    features are ``features`` when given (``(N, D)``, rows in the order of
    ``assignments.csv``), else read from the feature cache that ``summary.json`` names, when it
    still holds them and they reproduce ``feature_centroids.npy``.

    Raises:
        ReportError: when the folder or its files do not follow the results format.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise ReportError(f"results folder {root} does not exist; pass the --out of a cluster run")
    ids, paths, clusters, scores, labels = _read_assignments(root / ASSIGNMENTS)
    summary = _read_summary(root / SUMMARY)
    n_seen = int(clusters.max()) + 1 if clusters.size else 0
    n_clusters = int(summary.get("n_clusters") or n_seen)
    if n_clusters < n_seen:
        raise ReportError(
            f"summary.json says n_clusters={n_clusters} but assignments.csv uses cluster "
            f"{n_seen - 1}; the files come from different runs"
        )
    names = summary.get("class_names")
    class_names = [str(c) for c in names] if isinstance(names, list) else None
    cents = _read_centroids(root / FEATURE_CENTROIDS, n_clusters)
    feats: np.ndarray | None
    if features is not None:
        feats, note = _check_features(features, len(ids)), "the encoder features given"
    else:
        feats, note = _cached_features(summary, len(ids))
        if (
            feats is not None
            and cents is not None
            and not _matches_centroids(feats, clusters, cents)
        ):
            feats, note = None, "the feature cache no longer matches this run"
    if feats is None:
        logger.warning("no encoder features for the report: %s", note)
    return Results(
        results_dir=root,
        ids=ids,
        paths=paths,
        clusters=clusters,
        scores=scores,
        labels=labels,
        latent=_read_latent(root / LATENT, len(ids)),
        n_clusters=n_clusters,
        class_names=class_names,
        metrics=_metrics(summary),
        skipped=_skipped(summary),
        summary=summary,
        features=feats,
        features_note=note,
        feature_centroids=cents,
    )
