"""`write_report`: a self-contained HTML page describing one clustering run."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from icbpl.core.metrics import evaluate, match_clusters
from icbpl.report._html import (
    ClusterView,
    Confusion,
    QualityRows,
    Thumb,
    cluster_html,
    confusion_html,
    details_html,
    esc,
    metrics_html,
    page_html,
    sizes_html,
    skipped_html,
)
from icbpl.report._images import (
    MapMethod,
    data_uri,
    make_thumbnail,
    project_2d,
    render_map,
    subsample,
)
from icbpl.report._load import Results, load_results
from icbpl.report._notes import flag_words, k_choice_html, quality_note
from icbpl.report._quality import (
    N_NEIGHBOURS,
    ClusterQuality,
    assess,
)
from icbpl.util.atomic import atomic_write_bytes
from icbpl.util.manifest import add_to_manifest

logger = logging.getLogger(__name__)

#: Above this many clusters or classes the confusion table is left out (it would dwarf the page).
MAX_CONFUSION = 100


def _check_int(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not lo <= value <= hi:
        raise ValueError(f"{name}={value!r} should be an integer in [{lo}, {hi}]")


def _display_name(res: Results, i: int) -> str:
    """The image's id: its path relative to the clustered folder (never the absolute path)."""
    return res.ids[i] or (Path(res.paths[i]).name if res.paths[i] else "") or f"row {i}"


def _shareable(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with the absolute paths of its settings and encoder cut to their last
    component (the page may be shared)."""
    out = dict(summary)
    for block in ("settings", "encoder"):
        if not isinstance(out.get(block), dict):
            continue
        values = dict(out[block])
        for key in ("path", "cache_dir", "weights"):
            value = values.get(key)
            if isinstance(value, str) and os.sep in value and not value.startswith("http"):
                values[key] = f"…/{Path(value).name}"
        out[block] = values
    return out


def _class_name(res: Results, label: int) -> str | None:
    if label < 0:
        return None
    if res.class_names is not None and label < len(res.class_names):
        return res.class_names[label]
    return str(label)


def _cluster_view(
    res: Results,
    c: int,
    rows: np.ndarray,
    n_central: int,
    n_border: int,
    size: int,
    image_loader: Callable[[int], np.ndarray] | None,
    quality: ClusterQuality | None,
) -> ClusterView:
    """``rows``: this cluster's row indices, sorted by decreasing margin (with ``quality``) or
    latent score."""
    central = rows[:n_central]
    border = rows[max(len(central), len(rows) - n_border) :][::-1]  # lowest first
    shown, name = (res.scores, "score") if quality is None else (quality.margin, "margin")

    def thumbs(idx: np.ndarray) -> list[Thumb]:
        out = []
        for i in idx.tolist():
            uri, reason = make_thumbnail(i, res.paths[i], size, image_loader)
            label = _class_name(res, int(res.labels[i])) if res.labels is not None else None
            value = float(shown[i])
            out.append(Thumb(uri, _display_name(res, i), value, label, reason, name))
        return out

    majority = None
    if res.labels is not None:
        lab = res.labels[rows]
        lab = lab[lab >= 0]
        if lab.size:
            counts = np.bincount(lab)
            top = int(counts.argmax())
            majority = (_class_name(res, top) or str(top), float(counts[top] / lab.size))
    sc = res.scores[rows]
    mean = float(np.nanmean(sc)) if np.isfinite(sc).any() else float("nan")
    view = ClusterView(c, len(rows), mean, thumbs(central), thumbs(border), majority)
    if quality is None:
        return view
    return dataclasses.replace(
        view,
        confident=float(quality.confident[c]),
        agreement=float(quality.agreement[c]),
        flags=quality.flags(c),
    )


def _confusion(res: Results, labels: np.ndarray) -> Confusion | None:
    """Clusters x classes counts, rows in Hungarian-matching order (matched clusters by their
    class, then the unmatched ones by size)."""
    known = labels >= 0
    y, p = labels[known], res.clusters[known]
    n_classes = max(len(res.class_names or []), int(y.max()) + 1)
    if res.n_clusters > MAX_CONFUSION or n_classes > MAX_CONFUSION:
        return None
    counts = np.zeros((res.n_clusters, n_classes), dtype=np.int64)
    np.add.at(counts, (p, y), 1)
    mapping = match_clusters(y, p)
    sizes = counts.sum(axis=1)
    matched = sorted(mapping, key=lambda c: mapping[c])
    rest = sorted(set(range(res.n_clusters)) - set(matched), key=lambda c: (-sizes[c], c))
    rows = matched + rest
    classes = [_class_name(res, j) or str(j) for j in range(n_classes)]
    return Confusion(rows, classes, counts[rows], [mapping.get(c, -1) for c in rows])


def _map(
    res: Results, method: MapMethod, max_points: int, seed: int, progress: bool
) -> tuple[bytes, str] | None:
    """The map's PNG and caption: of the encoder features, else (with a warning in the
    caption) of the latent."""
    source = res.features if res.features is not None else res.latent
    if source is None or len(res) == 0:
        return None
    idx = subsample(len(res), max_points, seed)
    logger.info("2-D map: %s of %d points", method, len(idx))
    xy = project_2d(np.asarray(source[idx]), method, seed, progress=progress)
    png = render_map(xy, res.clusters[idx], res.sizes(), seed=seed)
    name = "t-SNE" if method == "tsne" and len(idx) >= 5 else "PCA"
    what = (
        f"all {len(idx)} images"
        if len(idx) == len(res)
        else f"{len(idx)} of {len(res)} images (uniform random subsample, seed {seed})"
    )
    if res.features is not None:
        return png, (
            f"{name} of the encoder features (first reduced to 50 principal components), "
            f"{what}, coloured by cluster. Clusters whose colours overlap here are hard to tell "
            "apart for the encoder."
        )
    return png, (
        f"{name} of the trained latent space, {what}, coloured by cluster. No encoder features "
        f"({res.features_note}): the training pulls the latent onto one point per cluster, so "
        "separate blobs here do not show that the clusters differ."
    )


def _quality(res: Results, progress: bool) -> ClusterQuality | None:
    """Margins, agreement and flags from the encoder features (``None`` without them)."""
    if res.features is None or len(res) < 3:
        return None
    from icbpl.core.neighbours import mine_neighbours

    k = min(N_NEIGHBOURS, len(res) - 1)
    neighbours = mine_neighbours(res.features, k, progress=progress)
    return assess(
        res.features,
        res.clusters,
        res.n_clusters,
        centroids=res.feature_centroids,
        neighbours=neighbours,
    )


def _run_name(folder: Path) -> str:
    """The results folder's name; for ``icbpl cluster --report``, which writes the page in the
    staging folder ``.<name>.icbpl-staging-<pid>``, the name of the folder it becomes."""
    name = folder.resolve().name
    staged = re.fullmatch(r"\.(.+)\.icbpl-staging-\d+", name)
    return staged.group(1) if staged else name


def _header(res: Results, title: str) -> str:
    enc = res.summary.get("encoder") or {}
    bits = [f"{len(res)} images", f"{res.n_clusters} clusters"]
    if isinstance(enc, dict) and enc.get("name"):
        bits.append(f"encoder {enc['name']}")
    warn = ""
    if isinstance(enc, dict) and enc.get("supervised"):
        warn = (
            '<p class="note"><b>Note:</b> the encoder weights were trained with labels '
            "(supervised), so this clustering is not fully unsupervised.</p>"
        )
    return f"<h1>{esc(title)}</h1><p>{esc(' · '.join(bits))}</p>{warn}"


def write_report(
    results_dir: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    thumbs_per_cluster: int = 8,
    borderline_per_cluster: int = 4,
    thumb_size: int = 96,
    map_method: MapMethod = "tsne",
    image_loader: Callable[[int], np.ndarray] | None = None,
    max_clusters: int = 200,
    max_map_points: int = 3000,
    seed: int = 0,
    features: Any = None,
    progress: bool = False,
) -> Path:
    """Write a self-contained HTML report of a results folder and return its path.

    The page shows the size of every cluster; for each cluster (at most ``max_clusters``, the
    largest, in detail) its most central images and its borderline ones as embedded JPEG
    thumbnails; a 2-D map of the encoder features coloured by cluster (also saved as
    ``map.png`` next to the page); with labels, ACC/NMI/ARI and a clusters x classes confusion
    table in Hungarian-matching order; and the skipped files. It links to nothing: thumbnails
    are made from the images and embedded, so the page can be moved or mailed alone.

    With the encoder features (``features``, or the feature cache named in ``summary.json``),
    each cluster also gets its confident share, its neighbour agreement and "possibly mixed" /
    "possibly split" flags (`icbpl.report._quality`), and images are ranked by their
    feature-space margin (`icbpl.core.novelty.confidence`). Without them the map falls back to the
    latent space and the page says so.

    Args:
        results_dir: folder written by ``icbpl cluster`` (``assignments.csv``, ``latent.npy``,
            ``summary.json``).
        out: HTML file to write; default ``results_dir / "report.html"``.
        thumbs_per_cluster: central thumbnails per cluster (0 to 64).
        borderline_per_cluster: borderline thumbnails per cluster (0 to 64).
        thumb_size: thumbnail square side in pixels (16 to 512).
        map_method: ``"tsne"`` (on at most ``max_map_points`` points) or ``"pca"``.
        image_loader: for array datasets without paths: maps a row index of
            ``assignments.csv`` to an ``(H, W, 3)`` (or ``(H, W)``, ``(3, H, W)``) uint8 image,
            or floats in [0, 1]; used instead of the paths when given.
        max_clusters: clusters shown in detail (the largest ones); sizes are listed for all.
        max_map_points: rows of the uniform random subsample drawn on the map (t-SNE costs
            about 4-5 CPU-seconds per 1,000 points).
        seed: seed of the subsample and of t-SNE.
        features: ``(N, D)`` encoder features in the rows' order; default: from the cache.
        progress: show progress bars (neighbours, t-SNE iterations with an ETA) on stderr.

    Raises:
        ReportError: when the results folder is missing or malformed.
        ValueError: for out-of-range arguments.
    """
    _check_options(
        thumbs_per_cluster, borderline_per_cluster, thumb_size, max_clusters, max_map_points
    )
    if map_method not in ("tsne", "pca"):
        raise ValueError(f"map_method={map_method!r} should be 'tsne' or 'pca'")
    res = load_results(results_dir, features=features)
    html_path = Path(out) if out is not None else res.results_dir / "report.html"
    html_path.parent.mkdir(parents=True, exist_ok=True)
    title = f"icbpl report: {_run_name(res.results_dir)}"
    quality = _quality(res, progress)
    sections = _evaluation_sections(res)
    map_result = _map(res, map_method, max_map_points, seed, progress)
    if map_result is not None:
        atomic_write_bytes(html_path.parent / "map.png", map_result[0])
    sections.append(("map", "Map", _map_html(map_result)))
    curve = k_choice_html(res.summary)
    if curve is not None:
        sections.append(("k-choice", "Choosing k", curve))
    thumbs = (thumbs_per_cluster, borderline_per_cluster, thumb_size)
    sections += _cluster_sections(res, quality, max_clusters, thumbs, image_loader)
    sections.append(("skipped", f"Skipped files ({len(res.skipped)})", skipped_html(res.skipped)))
    sections.append(("run", "Run", details_html(_shareable(res.summary))))
    page = page_html(title, sections, _header(res, title))
    atomic_write_bytes(html_path, page.encode("utf-8"))
    written = [html_path.name] + (["map.png"] if map_result is not None else [])
    add_to_manifest(html_path.parent, written)  # replaced with the results, never kept stale
    logger.info("wrote %s (%.1f kB)", html_path, len(page) / 1024)
    return html_path


def _check_options(
    thumbs_per_cluster: int,
    borderline_per_cluster: int,
    thumb_size: int,
    max_clusters: int,
    max_map_points: int,
) -> None:
    """Raise ValueError for a `write_report` option out of its range."""
    _check_int("thumbs_per_cluster", thumbs_per_cluster, 0, 64)
    _check_int("borderline_per_cluster", borderline_per_cluster, 0, 64)
    _check_int("thumb_size", thumb_size, 16, 512)
    _check_int("max_clusters", max_clusters, 1, 1_000_000)
    _check_int("max_map_points", max_map_points, 2, 1_000_000)


def _evaluation_sections(res: Results) -> list[tuple[str, str, str]]:
    """The evaluation section (metrics, confusion table) when labels or metrics are known."""
    metrics, source = res.metrics, "from summary.json"
    labels = res.labels
    if labels is not None and (labels >= 0).any():
        known = labels >= 0
        if metrics is None:
            metrics = evaluate(labels[known], res.clusters[known])
            source = f"computed from the {int(known.sum())} labelled rows of assignments.csv"
        cm = _confusion(res, labels)
        inner = metrics_html(metrics, source)
        inner += (
            confusion_html(cm)
            if cm is not None
            else f'<p class="note">confusion table left out (more than {MAX_CONFUSION} '
            "clusters or classes); see each cluster's majority class.</p>"
        )
        return [("evaluation", "Evaluation against labels", inner)]
    if metrics:
        return [("evaluation", "Evaluation", metrics_html(metrics, source))]
    return []


def _map_html(map_result: tuple[bytes, str] | None) -> str:
    """The map section's HTML: the figure, or a note saying why there is none."""
    if map_result is None:
        return '<p class="note">No map: latent.npy not found (or no rows).</p>'
    png, caption = map_result
    return (
        f'<figure class="map"><img src="{data_uri(png, "image/png")}" alt="2-D map">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def _cluster_sections(
    res: Results,
    quality: Any,
    max_clusters: int,
    thumbs: tuple[int, int, int],
    image_loader: Any,
) -> list[tuple[str, str, str]]:
    """The overview (sizes, confidence, flags) and the clusters shown in detail (the
    ``max_clusters`` largest); ``thumbs``: thumbnails and borderline images per cluster, side."""
    thumbs_per_cluster, borderline_per_cluster, thumb_size = thumbs
    sizes = res.sizes()
    shown = sorted(np.argsort(-sizes, kind="stable")[:max_clusters].tolist())
    rank = res.scores if quality is None else quality.margin
    order = np.lexsort((-np.nan_to_num(rank, nan=-np.inf), res.clusters))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    no_images = image_loader is None and not any(res.paths)
    note = "no thumbnails: no image paths (pass image_loader for array data)" if no_images else None
    n_c, n_b = (0, 0) if no_images else (thumbs_per_cluster, borderline_per_cluster)
    views = [
        _cluster_view(
            res, c, order[starts[c] : starts[c + 1]], n_c, n_b, thumb_size, image_loader, quality
        )
        for c in shown
    ]
    rows = None
    if quality is not None:
        flags = [flag_words(quality, c) for c in range(res.n_clusters)]
        rows = QualityRows(quality.confident, quality.agreement, flags)
    overview = sizes_html(sizes, set(shown), rows) + quality_note(quality, res.features_note)
    hidden = res.n_clusters - len(shown)
    more = (
        f'<p class="note">{hidden} smaller clusters not shown in detail '
        f"(max_clusters={max_clusters}).</p>"
        if hidden > 0
        else ""
    )
    body = "".join(cluster_html(v, len(res), thumb_size, note) for v in views)
    return [
        ("overview", "Cluster sizes and confidence", overview),
        ("clusters", "Clusters", more + body),
    ]
