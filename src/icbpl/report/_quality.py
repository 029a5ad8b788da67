"""How trustworthy each cluster is, from the encoder features (not the collapsed latent).

* **confidence**: the share of a cluster's images whose margin (`icbpl.core.novelty.confidence`: the
  cosine of the image's features to its cluster's mean feature direction minus the cosine to
  the nearest other cluster's) is at least :data:`CONFIDENT_MARGIN`;
* **neighbour agreement**: the mean share of an image's nearest neighbours in feature space
  that sit in the same cluster. A cluster whose images' neighbours are spread over other
  clusters is flagged **mixed** (agreement below :data:`MIXED_AGREEMENT`);
* **split**: a pair of clusters that share many neighbour links: of all the links leaving the
  two clusters, the share that goes from one to the other (:func:`pair_link_share`), flagged at
  :data:`SPLIT_SHARE` and above.

The thresholds were measured on labelled folders of real photos in
``benchmarks/bench_practitioner.py`` (docs/BENCHMARKS.md, section ``practitioner``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from icbpl.core.novelty import confidence, feature_centroids

__all__ = [
    "CONFIDENT_MARGIN",
    "MIXED_AGREEMENT",
    "SPLIT_SHARE",
    "ClusterQuality",
    "assess",
    "cluster_agreement",
    "link_counts",
    "pair_link_share",
]

#: An image counts as confidently placed when its margin is at least this (cosine units).
CONFIDENT_MARGIN = 0.05
#: A cluster is flagged "mixed" when its mean neighbour agreement is below this.
MIXED_AGREEMENT = 0.5
#: Two clusters are flagged "split" when at least this share of their outgoing neighbour links
#: joins one to the other.
SPLIT_SHARE = 0.08
#: Neighbours per image the report uses for agreement and links.
N_NEIGHBOURS = 10


@dataclass(frozen=True)
class ClusterQuality:
    """Per-image margins and per-cluster measures of one run.

    Attributes:
        margin: ``(N,)`` feature-space margin of each image (`icbpl.core.novelty.confidence`).
        confident: ``(k,)`` share of each cluster's images with margin >= ``CONFIDENT_MARGIN``
            (NaN for an empty cluster).
        agreement: ``(k,)`` mean share of each cluster's images' neighbours in the same cluster
            (NaN when empty or without neighbours).
        mixed: clusters flagged mixed, lowest agreement first.
        split: ``(c, d, share)`` pairs flagged split (``c < d``), highest share first.
        n_neighbours: neighbours per image behind ``agreement`` and ``split`` (0: none).
    """

    margin: np.ndarray
    confident: np.ndarray
    agreement: np.ndarray
    mixed: list[int]
    split: list[tuple[int, int, float]]
    n_neighbours: int

    def flags(self, c: int) -> list[str]:
        """One plain-words line per flag of cluster ``c``."""
        out = []
        if c in self.mixed:
            out.append(
                f"possibly mixed: only {100 * self.agreement[c]:.0f}% of its images' nearest "
                "neighbours in feature space are in this cluster"
            )
        for a, b, share in self.split:
            if c in (a, b):
                other = b if c == a else a
                out.append(
                    f"possibly split with cluster {other}: {100 * share:.0f}% of the two "
                    "clusters' neighbour links join one to the other"
                )
        return out


def _per_cluster_mean(values: np.ndarray, clusters: np.ndarray, k: int) -> np.ndarray:
    sums = np.bincount(clusters, weights=values, minlength=k)
    counts = np.bincount(clusters, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def link_counts(neighbours: np.ndarray, clusters: np.ndarray, k: int) -> np.ndarray:
    """``(k, k)`` int64: ``[c, d]`` counts the links from an image of cluster ``c`` to a
    neighbour of cluster ``d`` (``neighbours``: ``(N, K)`` row indices)."""
    nb = np.asarray(neighbours, dtype=np.int64)
    src = np.repeat(clusters, nb.shape[1])
    dst = clusters[nb.ravel()]
    return np.bincount(src * k + dst, minlength=k * k).reshape(k, k).astype(np.int64)


def cluster_agreement(neighbours: np.ndarray, clusters: np.ndarray, k: int) -> np.ndarray:
    """``(k,)`` mean share of each cluster's images' neighbours in the same cluster."""
    nb = np.asarray(neighbours, dtype=np.int64)
    same = (clusters[nb] == clusters[:, None]).mean(axis=1)
    return _per_cluster_mean(same, clusters, k)


def pair_link_share(links: np.ndarray) -> np.ndarray:
    """``(k, k)`` symmetric: for ``c != d``, ``(L[c, d] + L[d, c]) / (out(c) + out(d))`` where
    ``out(c)`` counts every link leaving cluster ``c``'s images; 0 on the diagonal."""
    out = links.sum(axis=1).astype(np.float64)
    cross = (links + links.T).astype(np.float64)
    denom = out[:, None] + out[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(denom > 0, cross / np.maximum(denom, 1.0), 0.0)
    np.fill_diagonal(share, 0.0)
    return share


def assess(
    features: np.ndarray,
    clusters: np.ndarray,
    k: int,
    *,
    centroids: np.ndarray | None = None,
    neighbours: np.ndarray | None = None,
) -> ClusterQuality:
    """Margins, confident shares, neighbour agreement and flags of a clustering.

    Args:
        features: ``(N, D)`` encoder features of the clustered images.
        clusters: ``(N,)`` cluster index of each image, in ``[0, k)``.
        k: number of clusters.
        centroids: ``(k, D)`` feature centroids (`icbpl.core.novelty.feature_centroids`); computed
            from ``features`` when ``None``.
        neighbours: ``(N, K)`` nearest neighbours in feature space; no agreement or flags
            when ``None``.
    """
    cl = np.asarray(clusters, dtype=np.int64)
    cents = feature_centroids(features, cl, k) if centroids is None else centroids
    margin = confidence(features, cl, cents)
    confident = _per_cluster_mean((margin >= CONFIDENT_MARGIN).astype(np.float64), cl, k)
    if neighbours is None or len(cl) < 2:
        nan = np.full(k, np.nan)
        return ClusterQuality(margin, confident, nan, [], [], 0)
    agreement = cluster_agreement(neighbours, cl, k)
    mixed = [int(c) for c in np.argsort(agreement) if agreement[c] < MIXED_AGREEMENT]
    share = pair_link_share(link_counts(neighbours, cl, k))
    a, b = np.nonzero(np.triu(share >= SPLIT_SHARE, 1))
    split = sorted(
        ((int(i), int(j), float(share[i, j])) for i, j in zip(a, b, strict=True)),
        key=lambda t: -t[2],
    )
    return ClusterQuality(margin, confident, agreement, mixed, split, int(neighbours.shape[1]))
