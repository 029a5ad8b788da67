"""The stages of a run as small functions: open the images, build the encoder, extract, write."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from icbpl.pipeline._config import ClusterConfig, PipelineError
from icbpl.util.atomic import atomic_open
from icbpl.util.csvcell import neutralise_cell, restore_cell

if TYPE_CHECKING:
    from icbpl.pipeline._summary import StageTimer

logger = logging.getLogger(__name__)

#: Files and folders a run writes (listed, with report.html and map.png, in its manifest).
RUN_OUTPUTS = (
    "assignments.csv",
    "latent.npy",
    "neighbours.npy",
    "feature_centroids.npy",
    "summary.json",
    "config.json",
    "model",
    "log.txt",
    "encoder",
    "report.html",
    "map.png",
)


def open_source(
    path: str,
    dataset: str | None = None,
    split: str | None = None,
    *,
    progress: bool = False,
    include_hidden: bool = False,
) -> Any:
    """The image source of a folder, a recognised dataset file, or ``dataset`` under ``path``.

    ``include_hidden`` also reads names starting with ``"."`` in a plain folder.

    Raises:
        icbpl.data.DataError: missing path, no images, unknown dataset or split.
    """
    from icbpl.data import DataError, ImageFolder, dataset_info, list_datasets, load_dataset

    if dataset is not None:
        return load_dataset(dataset, split=split, root=path)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p} does not exist; pass a folder of images or a dataset file")
    claimed = any(
        (claims := dataset_info(name).claims) is not None and claims(p) for name in list_datasets()
    )
    if p.is_dir() and not claimed:
        folder = p / split if split is not None else p
        if split is not None and not folder.is_dir():
            raise DataError(f"split={split!r} asks for the sub-folder {folder}, which is missing")
        return ImageFolder(folder, progress=progress, include_hidden=include_hidden)
    return load_dataset(str(p), split=split)


def build_encoder(name: str, weights: str | None, input_size: int | None, seed: int) -> Any:
    """``create_encoder(name, weights, input_size=...)``; random weights are drawn from ``seed``.

    Raises:
        PipelineError: unknown encoder or an option it does not take.
    """
    from icbpl.encoders import create_encoder, list_encoders
    from icbpl.util.device import seeded

    kwargs: dict[str, Any] = {} if input_size is None else {"input_size": input_size}
    known = list_encoders()
    if name not in known and ":" not in name:
        raise PipelineError(
            f"unknown encoder {name!r}; choose one of {', '.join(known)} "
            "(`icbpl encoders` lists them) or 'timm:<model>'"
        )
    with seeded(seed):
        try:
            return create_encoder(name, weights=weights, **kwargs)
        except TypeError as err:
            if input_size is not None and "input_size" in str(err):
                raise PipelineError(
                    f"encoder {name!r} has a fixed input size; leave out input_size "
                    f"(--input-size) ({err})"
                ) from None
            raise


def resolve_k(
    k: int | str,
    k_range: tuple[int, int],
    features: np.ndarray,
    seed: int,
    *,
    progress: bool = False,
) -> tuple[int, dict[str, Any] | None]:
    """The number of clusters and, for ``k="auto"``, how it was chosen.

    ``"auto"`` runs `icbpl.model.choose_k.choose_k` (its default label-free criterion) over
    ``k_range[0]..k_range[1]``, capped below the number of images; the second value then holds
    the candidates, the criterion, the best three k, whether the answer is clear, a one-line
    ``message`` for the screen and the score of every candidate (for ``summary.json``).
    An integer ``k`` is returned as it is, with ``None``.

    Raises:
        PipelineError: ``k="auto"`` with no more images than the smallest candidate.
    """
    if k != "auto":
        return int(k), None
    from icbpl.model.choose_k import choose_k

    n = len(features)
    lo, hi = k_range
    top = min(hi, n - 1)
    if top < lo:
        raise PipelineError(
            f"k='auto' with k_range {lo}..{hi} needs more than {lo} images (k must stay below "
            f"the number of images), got {n}; add images or lower the range (--k-range)"
        )
    if top < hi:
        logger.info("k='auto': %d images, so candidates %d..%d instead of ..%d", n, lo, top, hi)
    chosen = choose_k(features, k_range=range(lo, top + 1), seed=seed, progress=progress)
    tried = f"{lo}..{top}" + (f" (capped below the {n} images)" if top < hi else "")
    info = {
        "k_range": [lo, top],
        "method": "silhouette_gap",
        "top": chosen.details.get("top"),
        "clear": chosen.details.get("clear"),
        "message": f"{chosen.details.get('message')}; tried k = {tried}",
        "scores": {str(c): round(v, 6) for c, v in chosen.scores.items()},
    }
    logger.info("k='auto': %s", info["message"])
    return int(chosen.best_k), info


def cache_dir_path(value: str | None) -> Path | None:
    """The feature cache folder of a ``cache_dir`` setting (``None``: the default under
    `icbpl.data.cache_root`; ``""``: no cache, ``None`` is returned)."""
    if value == "":
        return None
    if value is None:
        from icbpl.data import cache_root

        return cache_root() / "features"
    return Path(value).expanduser()


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path``, atomically."""
    with atomic_open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def image_paths(source: Any) -> list[str]:
    """Absolute file path of each image, ``""`` where the source has none (array datasets)."""
    path_of = getattr(source, "path", None)
    if not callable(path_of):
        return [""] * len(source)
    return [str(Path(path_of(i)).resolve()) for i in range(len(source))]


def write_assignments(
    path: str | os.PathLike[str],
    ids: list[str],
    paths: list[str],
    clusters: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray | None = None,
    unassigned: np.ndarray | None = None,
) -> Path:
    """Write ``id,path,cluster,score[,label][,unassigned]`` rows (score with 6 decimals;
    ``unassigned`` 1 for images far from every cluster) and return the path."""
    out = Path(path)
    header = ["id", "path", "cluster", "score"] + (["label"] if labels is not None else [])
    header += ["unassigned"] if unassigned is not None else []
    with atomic_open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i, (ident, p) in enumerate(zip(ids, paths, strict=True)):
            row = [neutralise_cell(ident), neutralise_cell(p), int(clusters[i])]
            row.append(f"{float(scores[i]):.6f}")
            if labels is not None:
                row.append(int(labels[i]))
            if unassigned is not None:
                row.append(int(unassigned[i]))
            writer.writerow(row)
    return out


def neutralised_rows(ids: list[str], paths: list[str]) -> list[dict[str, Any]]:
    """Rows whose ``id`` or ``path`` `write_assignments` neutralises, with their raw values."""
    return [
        {"row": i, "id": ident, "path": p}
        for i, (ident, p) in enumerate(zip(ids, paths, strict=True))
        if neutralise_cell(ident) != ident or neutralise_cell(p) != p
    ]


def extract(encoder: Any, source: Any, config: ClusterConfig, views: int, progress: bool) -> Any:
    """`icbpl.features.extract_features` with the batch size, device, precision, feature cache
    and seed of ``config``."""
    from icbpl.features import extract_features
    from icbpl.util.device import resolve_device

    return extract_features(
        encoder,
        source,
        views=views,
        batch_size=config.batch_size,
        device=resolve_device(config.device),
        precision=config.precision,
        cache_dir=cache_dir_path(config.cache_dir),
        seed=config.seed,
        progress=progress,
    )


def encoder_stage(config: ClusterConfig, timed: StageTimer) -> tuple[Any, dict[str, Any]]:
    """Stage ``encoder``: the run's encoder and its :func:`encoder_info`."""
    with timed("encoder"):
        encoder = build_encoder(config.encoder, config.weights, config.input_size, config.seed)
        enc_cfg = encoder.config
        if enc_cfg.supervised:
            logger.info(
                "encoder %s uses weights trained with labels (supervised): the clustering is not "
                "unsupervised end to end",
                enc_cfg.name,
            )
        if enc_cfg.weights == "random":
            logger.info("encoder %s has random weights (no pretrained weights)", enc_cfg.name)
        return encoder, encoder_info(encoder)


def encoder_info(encoder: Any) -> dict[str, Any]:
    """An encoder's ``summary.json`` entry: its config and weights digest."""
    from icbpl.features import weights_digest

    return {**encoder.config.to_dict(), "weights_digest": weights_digest(encoder)}


def images_stage(config: ClusterConfig, timed: StageTimer, progress: bool) -> Any:
    """Stage ``images``: the image source, refused when it has fewer images than an integer k."""
    with timed("images"):
        source = open_source(
            config.path,
            config.dataset,
            config.split,
            progress=progress,
            include_hidden=config.include_hidden,
        )
        n = len(source)
        if isinstance(config.k, int) and n < config.k:
            raise PipelineError(
                f"{n} images should be >= k={config.k} clusters; pass a smaller --k or add images"
            )
    return source


def source_loader(source: Any) -> Callable[[int], np.ndarray]:
    """``i -> (H, W, 3)`` uint8 image ``i`` of ``source`` (an `icbpl.data.ImageSource`)."""

    def load(i: int) -> np.ndarray:
        return np.ascontiguousarray(source.load(i).permute(1, 2, 0).numpy())

    return load


def image_loader_for(run_dir: str | os.PathLike[str]) -> Callable[[int], np.ndarray] | None:
    """Thumbnail loader for a run on a dataset without image files (for `write_report`).

    Rebuilds the run's source from ``config.json`` when ``assignments.csv`` has no paths; returns
    ``None`` when the rows have paths, or when the source cannot be opened or no longer matches.
    """
    run = Path(run_dir)
    try:
        config = ClusterConfig.from_file(run)
        with (run / "assignments.csv").open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (PipelineError, OSError):
        return None
    if not rows or any(r.get("path") for r in rows):
        return None
    try:
        source = open_source(
            config.path, config.dataset, config.split, include_hidden=config.include_hidden
        )
    except (ValueError, OSError) as err:
        logger.warning("no thumbnails: could not reopen the run's images (%s)", err)
        return None
    if list(source.ids) != [restore_cell(r["id"]) for r in rows]:
        logger.warning("no thumbnails: the run's images changed since it ran")
        return None
    return source_loader(source)
