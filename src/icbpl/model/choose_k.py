"""Choosing the number of clusters k without labels: :func:`choose_k`.

The criterion is a **silhouette gap**. Every candidate k is scored on a few random subsamples
(``n_samples`` rows each, ``n_repeats`` times), so the cost does not grow with N. Per repeat the
rows are centred, projected on their first ``n_components`` principal components and
L2-normalised (the cosine geometry ICBPL uses); k-means partitions them for every k, and the
score is

    gap(k) = silhouette(k) - silhouette_ref(k)

the mean cosine silhouette of the k-means partition minus that of a structureless reference (a
Gaussian with the subsample's principal variances, normalised likewise, clustered the same way).
The plain silhouette prefers coarse splits (animals vs vehicles on CIFAR-10) because even
structureless data give a high silhouette at k = 2-3; the reference removes that bias. The
largest mean gap wins.

**No clear k.** When candidates far from the best (outside +-20% of it) score within
``max(2 standard errors, 2% of the best score)`` of the best, the data do not single out one k:
``details["clear"]`` is ``False`` and ``details["message"]`` says
``"no clear k: best candidates 6, 12, 14"``; ``best_k`` is still the best-scoring one, and the
caller should look at the candidates (the report plots the curve).

Measured (``benchmarks/bench_practitioner.py``, docs/BENCHMARKS.md, section ``practitioner``) on
efficientnet_lite0 (ImageNet-supervised) features of folders of real photos; docs/notes/choose_k.md
has the numbers of the criteria that scored worse.

Confirmation with ICBPL (``confirm > 0``): the ``confirm`` best screening candidates are re-fitted
with :class:`icbpl.ICBPL` (``views``, ``seed`` and ``**icbpl_kwargs`` passed on) on the first
repeat's subsample and re-scored with the same gap on the ICBPL labels; the best of them wins.
It costs ``confirm`` ICBPL fits, so it is off by default.

Small k-means fits are fastest single-threaded and many-thread pools on a busy machine slow them
by an order of magnitude, so the screening runs under ``threadpoolctl`` limits of one thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from icbpl.model.validation import check_features

__all__ = ["ChooseKResult", "choose_k"]

logger = logging.getLogger(__name__)

#: Candidates this far (relative) from the best count as "another answer" for the clarity check.
FAR = 0.2
#: ... and they make the answer unclear when they score within this share of the best score
#: (or two standard errors of the best, whichever is larger).
CLOSE = 0.02


@dataclass(frozen=True)
class ChooseKResult:
    """What :func:`choose_k` found.

    Attributes:
        best_k: the chosen number of clusters.
        scores: silhouette gap per candidate k (mean over repeats; higher is better), in
            increasing k.
        details: ``top`` (the best three k by score), ``clear`` (bool, see the module notes),
            ``message`` (one line for a screen, e.g. ``"k=12 (top 12, 11, 10)"`` or
            ``"no clear k: best candidates 6, 12, 14"``), ``per_repeat`` ({k: [gap per repeat]}),
            ``std`` ({k: spread over repeats}), ``screen_k`` (the screening's choice),
            ``confirmed`` ({k: ICBPL-based gap} when ``confirm > 0``), ``n_samples`` (rows per
            repeat), ``n_repeats``, ``seconds``.
    """

    best_k: int
    scores: dict[int, float]
    details: dict[str, Any] = field(default_factory=dict)


class _Screen:
    """One subsample (normalised PCA features) and its structureless reference."""

    def __init__(self, z: np.ndarray, scales: np.ndarray, seed: int) -> None:
        self.z = z
        self.seed = seed
        rng = np.random.default_rng(seed + 7919)
        g = rng.standard_normal((len(z), len(scales))) * scales
        self.ref = _unit_rows(g)
        self._ref_sil: dict[int, float] = {}

    def reference_silhouette(self, k: int) -> float:
        if k not in self._ref_sil:
            self._ref_sil[k] = _silhouette(self.ref, _kmeans(self.ref, k, self.seed + 1))
        return self._ref_sil[k]

    def gap(self, k: int, labels: np.ndarray | None = None) -> float:
        """Silhouette gap of ``labels`` (default: k-means with k clusters) against the null."""
        lab = _kmeans(self.z, k, self.seed) if labels is None else labels
        return _silhouette(self.z, lab) - self.reference_silhouette(k)


def _kmeans(z: np.ndarray, k: int, seed: int) -> np.ndarray:
    km = KMeans(k, n_init=2, max_iter=100, random_state=seed).fit(z)
    return np.asarray(km.labels_, dtype=np.int64)


def _silhouette(z: np.ndarray, labels: np.ndarray) -> float:
    if len(np.unique(labels)) < 2:
        return -1.0
    return float(silhouette_score(z, labels, metric="cosine"))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def _make_screen(x: np.ndarray, n_components: int, seed: int) -> _Screen:
    """Centre, project on the first principal components, L2-normalise."""
    c = max(1, min(n_components, x.shape[1], len(x) - 1))
    pca = PCA(c, svd_solver="randomized" if c < min(x.shape) // 2 else "full", random_state=seed)
    scores = pca.fit_transform(x.astype(np.float64))
    return _Screen(_unit_rows(scores), np.maximum(scores.std(axis=0), 1e-12), seed)


# ------------------------------------------------------------------------------- front door
def _check_k_range(k_range: Iterable[int], n: int) -> list[int]:
    try:
        ks = sorted({int(k) for k in k_range})
    except (TypeError, ValueError) as err:
        raise ValueError(f"k_range should be integers, e.g. range(2, 51); got {k_range!r}") from err
    if not ks:
        raise ValueError(f"k_range is empty ({k_range!r}); pass e.g. range(2, 51)")
    if ks[0] < 2:
        raise ValueError(f"k_range holds k={ks[0]}; every candidate should be >= 2")
    if ks[-1] > n - 1:
        raise ValueError(
            f"k_range goes up to k={ks[-1]} but there are n_samples={n}; "
            f"candidates should be <= {n - 1} (a silhouette needs a cluster with two rows)"
        )
    return ks


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} should be an integer >= {low}")


def clarity(ks: list[int], per_repeat: dict[int, list[float]], best_k: int) -> tuple[bool, str]:
    """Whether ``best_k`` stands out, and a one-line message (see the module notes)."""
    mean = {k: float(np.mean(v)) for k, v in per_repeat.items()}
    r = len(per_repeat[best_k])
    sem = float(np.std(per_repeat[best_k])) / np.sqrt(max(r - 1, 1))
    tol = max(2.0 * sem, CLOSE * abs(mean[best_k]))
    ranked = sorted(ks, key=lambda k: (-mean[k], k))
    rivals = [k for k in ranked if mean[k] >= mean[best_k] - tol and abs(k - best_k) > FAR * best_k]
    if not rivals:
        top = ", ".join(str(k) for k in ranked[:3])
        return True, f"k={best_k} (best candidates {top})"
    shown = sorted({best_k, *rivals[:2]})
    return False, "no clear k: best candidates " + ", ".join(str(k) for k in shown)


def _checked(
    X: Any, k_range: Any, n_samples: int, n_repeats: int, confirm: int, views: Any
) -> tuple[np.ndarray, list[int], int, np.ndarray | None]:
    """`choose_k`'s inputs checked: features, candidate ks, subsample size, views."""
    x = check_features(X)
    ks = _check_k_range(k_range, len(x))
    _check_int("n_samples", n_samples, 2)
    _check_int("n_repeats", n_repeats, 1)
    _check_int("confirm", confirm, 0)
    m = min(n_samples, len(x))
    if ks[-1] > m - 1:
        raise ValueError(
            f"k_range goes up to k={ks[-1]} but each subsample has n_samples={m} rows; "
            f"raise n_samples or lower the largest k"
        )
    return x, ks, m, _check_views(views, x.shape)


def choose_k(
    X: Any,
    k_range: Iterable[int] = range(2, 51),
    *,
    views: Any = None,
    seed: int = 0,
    n_samples: int = 3000,
    n_repeats: int = 5,
    n_components: int = 50,
    confirm: int = 0,
    progress: bool = False,
    **icbpl_kwargs: Any,
) -> ChooseKResult:
    """Choose the number of clusters of features ``X`` (N, D) from ``k_range`` without labels.

    Args:
        X: features (or flattened pixels) of the samples; no NaN or inf.
        k_range: candidate k values (each >= 2 and < N); duplicates are ignored.
        views: optional (V, N, D) features of augmented views, used only by the ICBPL
            confirmation (``confirm > 0``).
        seed: seed of the subsamples, k-means, references and ICBPL.
        n_samples: rows per scoring subsample (all rows when N is smaller).
        n_repeats: number of subsamples; scores are averaged over them.
        n_components: principal components kept before L2 normalisation.
        confirm: re-score this many of the best screening candidates with ICBPL fits.
        progress: show a progress bar over the (repeat, k) scorings on stderr.
        **icbpl_kwargs: passed to :class:`icbpl.ICBPL` for the confirmation (e.g. ``epochs``).

    Returns:
        :class:`ChooseKResult` with ``best_k``, ``scores`` ({k: mean gap}) and ``details``.
    """
    x, ks, m, v = _checked(X, k_range, n_samples, n_repeats, confirm, views)
    n = len(x)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    per_repeat: dict[int, list[float]] = {k: [] for k in ks}
    screens: list[tuple[np.ndarray, _Screen]] = []
    bar = tqdm(total=n_repeats * len(ks), desc="choosing k", unit="k", disable=not progress)
    with threadpool_limits(limits=1), bar:
        for r in range(n_repeats):
            idx = np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)
            screen = _make_screen(x[idx], n_components, seed + 1000 * r)
            for k in ks:
                per_repeat[k].append(screen.gap(k))
                bar.update(1)
            screens.append((idx, screen))
            logger.info("choose_k: repeat %d/%d done (%.1f s)", r + 1, n_repeats, _since(t0))
    scores = {k: float(np.mean(per_repeat[k])) for k in ks}
    screen_k = max(ks, key=lambda k: (scores[k], -k))
    best_k = screen_k
    details: dict[str, Any] = {
        "top": sorted(ks, key=lambda k: (-scores[k], k))[:3],
        "per_repeat": per_repeat,
        "std": {k: float(np.std(per_repeat[k])) for k in ks},
        "screen_k": screen_k,
        "n_samples": m,
        "n_repeats": n_repeats,
    }
    if confirm:
        idx, screen = screens[0]
        ranked = sorted(ks, key=lambda k: (-scores[k], k))
        confirmed = _confirm(
            x[idx], None if v is None else v[:, idx], screen, ranked[:confirm], seed, icbpl_kwargs
        )
        details["confirmed"] = confirmed
        best_k = max(sorted(confirmed), key=lambda k: confirmed[k])
    details["clear"], details["message"] = clarity(ks, per_repeat, best_k)
    details["seconds"] = _since(t0)
    logger.info("choose_k: %s", details["message"])
    return ChooseKResult(best_k=int(best_k), scores=scores, details=details)


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


def _check_views(views: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if views is None:
        return None
    v = np.asarray(views.detach().cpu() if hasattr(views, "detach") else views, np.float32)
    if v.ndim == 2:
        v = v[None]
    if v.ndim != 3 or v.shape[1:] != shape:
        raise ValueError(
            f"views should have shape (V, {shape[0]}, {shape[1]}) to match X, got {v.shape}"
        )
    if not np.isfinite(v).all():
        raise ValueError("views contain NaN or inf; recompute the view features")
    return v


def _confirm(
    x: np.ndarray,
    views: np.ndarray | None,
    screen: _Screen,
    candidates: list[int],
    seed: int,
    icbpl_kwargs: dict[str, Any],
) -> dict[int, float]:
    """Re-score ``candidates`` with the partitions of ICBPL fits on the subsample ``x``."""
    from icbpl.model.estimator import ICBPL

    out: dict[int, float] = {}
    for k in candidates:
        model = ICBPL(n_clusters=k, random_state=seed, **icbpl_kwargs).fit(x, views=views)
        out[k] = screen.gap(k, np.asarray(model.labels_, dtype=np.int64))
        logger.info("choose_k: ICBPL k=%d re-scored %.4f", k, out[k])
    return out
