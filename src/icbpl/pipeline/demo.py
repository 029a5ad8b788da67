"""``icbpl demo``: ICBPL and k-means on scikit-learn's 8x8 digits (:mod:`icbpl.data.digits`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from icbpl.model.progress import FitProgress

__all__ = ["DemoResult", "run_digits_demo"]

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """Scores of ICBPL and k-means on the digits, with what was run.

    Attributes:
        metrics: ``{"ICBPL": {"acc", "nmi", "ari"}, "k-means": {...}}``.
        seconds: wall time of each method (views included in ICBPL's).
        n_samples, n_clusters, n_views, epochs, seed: the setting.
        best_epoch: the epoch ICBPL selected without labels.
    """

    metrics: dict[str, dict[str, float]]
    seconds: dict[str, float]
    n_samples: int
    n_clusters: int
    n_views: int
    epochs: int
    seed: int
    best_epoch: int
    extra: dict[str, Any] = field(default_factory=dict)


def run_digits_demo(
    *,
    seed: int = 0,
    epochs: int = 60,
    n_views: int = 4,
    n_neighbours: int = 4,
    progress: FitProgress | None = None,
) -> DemoResult:
    """Cluster the digits' raw pixels with ICBPL (affine views) and with k-means, and score both.

    ICBPL uses the paper's loss weights (8, 2, 2, 1), ``n_neighbours`` neighbours and
    ``n_views`` views from :func:`icbpl.data.digits.digits_views`; k-means (scikit-learn,
    10 k-means++ restarts) runs on the same pixels. Both use ``seed``. ``progress`` hears
    ICBPL's fit (:class:`icbpl.model.progress.FitEvent`).
    """
    from sklearn.cluster import KMeans

    from icbpl.core.metrics import evaluate
    from icbpl.data.digits import digits_views, load_digits_data
    from icbpl.model.estimator import ICBPL

    images, labels = load_digits_data()
    x = images.reshape(len(images), -1)
    k = int(labels.max()) + 1

    t0 = time.perf_counter()
    views = digits_views(images, n_views, seed=seed).reshape(n_views, len(x), -1)
    model = ICBPL(n_clusters=k, epochs=epochs, n_neighbours=n_neighbours, random_state=seed)
    model.fit(x, views=views, progress=progress)
    icbpl_seconds = time.perf_counter() - t0
    logger.info(
        "digits demo: ICBPL done in %.1f s (best epoch %d)", icbpl_seconds, model.best_epoch_
    )

    t0 = time.perf_counter()
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    km_seconds = time.perf_counter() - t0
    return DemoResult(
        metrics={"ICBPL": evaluate(labels, model.labels_), "k-means": evaluate(labels, km)},
        seconds={"ICBPL": icbpl_seconds, "k-means": km_seconds},
        n_samples=len(x),
        n_clusters=k,
        n_views=n_views,
        epochs=epochs,
        seed=seed,
        best_epoch=int(model.best_epoch_),
    )
