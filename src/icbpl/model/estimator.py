"""The scikit-learn style front door: :class:`ICBPL`."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from icbpl.core.balance import fill_offsets, min_cluster_size
from icbpl.core.metrics import evaluate
from icbpl.core.neighbours import mine_neighbours
from icbpl.core.objective import LossWeights
from icbpl.core.pedcc import make_pedcc
from icbpl.model._saved import load_model, save_model
from icbpl.model.params import INITS, validate_params
from icbpl.model.progress import FitProgress, epoch_events
from icbpl.model.training import EpochRecord, TrainConfig, TrainResult, train_head
from icbpl.model.validation import check_features, check_fit_inputs
from icbpl.model.warmstart import init_starts, init_targets, neighbours_to_mine

__all__ = ["ICBPL", "INITS"]

logger = logging.getLogger(__name__)


class ICBPL(ClusterMixin, TransformerMixin, BaseEstimator):
    """ICBPL clustering of feature vectors (arXiv 2408.01920).

    An MLP head maps features onto the unit sphere of a ``latent_dim``-dimensional space, trained
    so that the latents match ``n_clusters`` predefined evenly distributed class centroids
    (PEDCC) in distribution (MMD), agree with their augmented views and their nearest neighbours,
    and sit close to one centroid. A sample's cluster is its nearest PEDCC point by cosine.

    Parameters:
        n_clusters: number of clusters k (>= 2).
        latent_dim: dimension d of the latent sphere (k <= d + 1 gives an exact simplex).
        hidden: widths of the head's hidden layers.
        epochs, batch_size, lr, weight_decay: optimisation (Adam).
        loss_weights: (mmd, augmentation, neighbour, min_distance) weights; paper: (8, 2, 2, 1).
        distance: ``cosine`` (paper), ``euclidean``, ``composite_cosine``.
        n_neighbours: k of the kNN loss (paper: 4; 0 disables it).
        refresh_every: re-mine neighbours from the latent space every this many epochs (paper: 30).
        patience: stop when the label-free score has not improved for this many epochs (beyond
            the paper; 0 runs all ``epochs``). The kept epoch is the best-scoring one either way.
        device: ``"cpu"``, ``"cuda"``, ... or None for CPU.
        n_heads: train this many heads from different seeds (seed ``random_state + 7919 * h``)
            and keep the one whose selected epoch has the best label-free score (beyond the
            paper; head 0 is exactly the single-head model). Costs ``n_heads`` times the time.
        init: the start of the head. ``"kmeans"`` (beyond the paper): k-means on
            the neighbour-smoothed features (:func:`icbpl.core.smoothing.smoothed_kmeans`, seeded
            like the head) gives every sample a PEDCC point, and ``init_epochs`` epochs pull the
            latents towards them before the ICBPL epochs refine the partition; above plain
            k-means and the random start on CIFAR-10, Tiny-ImageNet folders and digits, and no
            collapse onto few clusters for large k (docs/BENCHMARKS.md). ``"random"``: the
            paper's randomly initialised head (``ICBPL(init="random")`` is the paper's method).
            ``"scan"`` (beyond the paper): the same warm start from SCAN's clustering step (the
            SCAN peer's defaults without its self-labelling, on the same features, views and all
            the neighbour columns given to ``fit``, 20 mined if none). Costs one SCAN
            clustering step per head. ``"auto"`` (the default): one head from each of those two
            starts (same seed), the higher label-free score kept (``heads_`` lists both).
        init_epochs: epochs of that warm start (ignored with ``init="random"``).
        random_state: seed; the same seed gives the same result on the CPU.

    Learned attributes: ``labels_``, ``centroids_`` (k, d), ``head_``, ``history_`` (one record
    per epoch), ``start_`` (the record of the warm-started head, epoch 0, or ``None``),
    ``best_epoch_`` (chosen without labels; 0: the warm-started head scored best and is kept),
    ``n_features_in_``, ``neighbours_``, ``heads_`` (seed, start, selected epoch, label-free score
    and, with ``y``, metrics of every head),
    ``init_metrics_`` (with ``y`` and a warm start: metrics of each head's starting partition),
    ``cluster_offsets_`` (k,): added to the scores before the argmax of ``predict``.

    No requested cluster is left empty (beyond the paper, all starts but ``init="random"``):
    when a cluster ends the fit with fewer than ``N // (10 k)`` samples (at least 1),
    :func:`icbpl.core.balance.fill_offsets` raises its score offset just enough that its most
    favourable samples move to it; offsets are zero otherwise, and ``predict`` applies them,
    so ``fit(X).predict(X)`` still equals ``labels_``.
    """

    def __init__(
        self,
        n_clusters: int = 10,
        *,
        latent_dim: int = 100,
        hidden: Sequence[int] = (512,),
        epochs: int = 60,
        batch_size: int = 100,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        loss_weights: Sequence[float] = (8.0, 2.0, 2.0, 1.0),
        distance: str = "cosine",
        n_neighbours: int = 4,
        refresh_every: int = 30,
        patience: int = 10,
        n_heads: int = 1,
        init: str = "auto",
        init_epochs: int = 3,
        device: str | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.loss_weights = loss_weights
        self.distance = distance
        self.n_neighbours = n_neighbours
        self.refresh_every = refresh_every
        self.patience = patience
        self.n_heads = n_heads
        self.init = init
        self.init_epochs = init_epochs
        self.device = device
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting
    def _config(self) -> TrainConfig:
        weights = tuple(float(w) for w in self.loss_weights)
        return TrainConfig(
            n_clusters=int(self.n_clusters),
            latent_dim=int(self.latent_dim),
            hidden=tuple(int(h) for h in self.hidden),
            epochs=int(self.epochs),
            batch_size=int(self.batch_size),
            lr=float(self.lr),
            weight_decay=float(self.weight_decay),
            weights=LossWeights(*weights),
            distance=str(self.distance),
            n_neighbours=int(self.n_neighbours),
            refresh_every=int(self.refresh_every),
            patience=int(self.patience),
            init_epochs=int(self.init_epochs) if self.init != "random" else 0,
            seed=0 if self.random_state is None else int(self.random_state),
        )

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        views: Any = None,
        neighbours: Any = None,
        progress: FitProgress | None = None,
    ) -> ICBPL:
        """Fit the head on features ``X`` (N, D).

        Args:
            X: features of the samples.
            y: optional labels, used only to record ACC/NMI/ARI per epoch in ``history_``; they
                never influence training or the choice of epoch.
            views: optional features of augmented views, (V, N, D) or (N, D).
            neighbours: optional (N, K) neighbour indices; mined by cosine from ``X`` if omitted.
                The first ``n_neighbours`` columns feed the kNN loss; ``init="scan"`` gives
                all K to SCAN's clustering step.
            progress: called with a :class:`icbpl.model.progress.FitEvent` as each phase
                starts and after each epoch (a progress display; it cannot change the fit).
        """
        validate_params(self.get_params())
        x, v, nb_all, labels = check_fit_inputs(
            X,
            y,
            views,
            neighbours,
            n_clusters=self.n_clusters,
            n_neighbours=self.n_neighbours,
        )
        config = self._config()
        device = torch.device(self.device or "cpu")
        centroids = torch.from_numpy(
            make_pedcc(config.n_clusters, config.latent_dim, seed=config.seed)
        ).float()
        k_nb = int(self.n_neighbours)
        if nb_all is None and "scan" in init_starts(self.init):
            # one mining serves both: SCAN's 20 neighbours and the first k_nb for the kNN loss
            nb_all = mine_neighbours(
                x, neighbours_to_mine(self.init, k_nb, len(x)), seed=config.seed
            )
        result = self._fit_heads(config, device, centroids, x, v, nb_all, labels, progress)
        self.head_ = result.head.cpu()
        self.centroids_ = centroids.numpy()
        self.history_: list[EpochRecord] = result.history
        self.best_epoch_ = result.best_epoch
        self.start_: EpochRecord | None = result.start
        self.neighbours_ = result.neighbours
        self.n_features_in_ = x.shape[1]
        self.cluster_offsets_ = np.zeros(config.n_clusters, dtype=np.float32)
        self.labels_ = self.predict(x)
        if self.init != "random":
            self._fill_clusters(x)
        sizes = np.bincount(self.labels_, minlength=config.n_clusters)
        if (sizes == 0).any():
            logger.warning(
                "%d of %d clusters are empty; consider a smaller n_clusters",
                int((sizes == 0).sum()),
                config.n_clusters,
            )
        return self

    def _fill_clusters(self, x: np.ndarray) -> None:
        """Set ``cluster_offsets_`` so that no cluster is smaller than
        :func:`icbpl.core.balance.min_cluster_size` (zeros when none is), then ``labels_``."""
        k = int(self.n_clusters)
        m = min_cluster_size(len(x), k)
        if np.bincount(self.labels_, minlength=k).min() >= m:
            return
        self.cluster_offsets_ = fill_offsets(self.cosine_scores(x), m)
        self.labels_ = self.predict(x)
        logger.info("clusters under %d samples filled by per-cluster score offsets", m)

    def _fit_heads(
        self,
        config: TrainConfig,
        device: torch.device,
        centroids: torch.Tensor,
        x: np.ndarray,
        v: np.ndarray | None,
        nb_all: np.ndarray | None,
        labels: np.ndarray | None,
        progress: FitProgress | None = None,
    ) -> TrainResult:
        """Train ``n_heads`` heads (each from its warm start) and return the best-scoring one;
        sets ``heads_`` and ``init_metrics_``."""
        xt = _tensor(x, device)
        vt = _tensor(v, device) if v is not None else None
        k_nb = int(self.n_neighbours)
        nb = nb_all[:, :k_nb] if nb_all is not None and k_nb else None
        results = []
        self.init_metrics_: list[dict[str, float]] = []
        runs = [(h, start) for h in range(int(self.n_heads)) for start in init_starts(self.init)]
        for h, start in runs:
            cfg_h = dataclasses.replace(config, seed=config.seed + 7919 * h)
            targets = init_targets(start, x, v, nb_all, config.n_clusters, cfg_h.seed)
            if targets is not None and labels is not None:
                self.init_metrics_.append(evaluate(labels, targets))
            res = train_head(
                xt,
                centroids.to(device),
                cfg_h,
                views=vt,
                neighbours=nb,
                y=labels,
                init_targets=targets,
                callback=epoch_events(progress, config.epochs),
            )
            results.append(res)
            logger.info(
                "head %d (%s start): label-free score %.4f", h, start, res.best_record.score
            )
        scores = [r.best_record.score for r in results]
        self.heads_ = [
            {
                "seed": config.seed + 7919 * h,
                "init": start,
                "best_epoch": r.best_epoch,
                "score": score,
                "metrics": r.best_record.metrics,
            }
            for (h, start), r, score in zip(runs, results, scores, strict=True)
        ]
        return results[int(np.argmax(scores))]

    # --------------------------------------------------------------- inference
    def transform(self, X: Any) -> np.ndarray:
        """Latent features on the unit sphere, (N, latent_dim)."""
        check_is_fitted(self, "head_")
        x = check_features(X, n_features=self.n_features_in_)
        with torch.no_grad():
            self.head_.eval()
            out = [self.head_(torch.from_numpy(x[i : i + 8192])) for i in range(0, len(x), 8192)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.latent_dim), np.float32)

    def cosine_scores(self, X: Any) -> np.ndarray:
        """Cosine of each sample's latent to each PEDCC point, (N, k), in [-1, 1]."""
        return self.transform(X) @ self.centroids_.T

    def soft_assign(self, X: Any, temperature: float = 0.1) -> np.ndarray:
        """Soft clusters (N, k), rows sum to 1.

        The softmax of the cosines divided by ``temperature``.
        """
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} should be > 0")
        s = self.cosine_scores(X) / temperature
        s = s - s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """Cluster of each sample: its nearest PEDCC point by cosine, after adding
        ``cluster_offsets_``."""
        scores = self.cosine_scores(X)
        offsets = getattr(self, "cluster_offsets_", None)
        if offsets is not None:
            scores = scores + offsets
        return scores.argmax(axis=1).astype(np.int64)

    def fit_predict(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """``fit(X, ...).labels_``; equals ``fit(X).predict(X)``."""
        return self.fit(X, y, **fit_params).labels_

    # ---------------------------------------------------------------- save/load
    def save(self, path: str | Path) -> Path:
        """Write ``model.safetensors`` (head + PEDCC) and ``config.json`` into folder ``path``
        (each file atomically)."""
        check_is_fitted(self, "head_")
        return save_model(self, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> ICBPL:
        """Load a model written by :meth:`save` (no pickle is involved).

        Every field of ``config.json`` is checked with the constraints of ``__init__``
        (`icbpl.model.params.PARAMETER_CONSTRAINTS`), and every tensor for its shape and for NaN
        or inf; the error names the offending field or tensor.

        Raises:
            FileNotFoundError: ``path`` holds no saved model.
            ValueError: a field or tensor that is missing, unknown, out of range or not finite.
        """
        return load_model(cls, Path(path))


def _tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """``a`` as a tensor on ``device``; on the CPU it shares ``a``'s memory (a read-only memory
    map stays one: training only reads it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a).to(device)
