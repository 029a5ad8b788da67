"""Tests of `icbpl.report._quality`: hand-computed links and agreement, planted splits/mixes."""

from __future__ import annotations

import numpy as np

from icbpl.core.neighbours import mine_neighbours
from icbpl.core.novelty import confidence, feature_centroids
from icbpl.report._quality import (
    CONFIDENT_MARGIN,
    assess,
    cluster_agreement,
    link_counts,
    pair_link_share,
)


def test_links_agreement_and_share_by_hand() -> None:
    clusters = np.array([0, 0, 1, 1])
    neighbours = np.array([[1, 2], [0, 3], [3, 0], [2, 2]])
    links = link_counts(neighbours, clusters, 2)
    assert links.tolist() == [[2, 2], [1, 3]]
    assert cluster_agreement(neighbours, clusters, 2).tolist() == [0.5, 0.75]
    share = pair_link_share(links)
    assert share[0, 1] == share[1, 0] == (2 + 1) / (4 + 4)
    assert share[0, 0] == share[1, 1] == 0.0


def test_planted_split_and_mixed_clusters_are_flagged() -> None:
    rng = np.random.default_rng(0)
    centres = 10.0 * np.eye(3, 32)
    blob = np.repeat([0, 1, 2], 60)
    x = centres[blob] + rng.normal(size=(180, 32))
    clusters = np.zeros(180, dtype=np.int64)  # blob 0: cluster 0, alone
    clusters[blob == 1] = rng.permutation(np.arange(60) % 2) + 1  # blob 1 cut in two: 1, 2
    clusters[blob == 2] = rng.permutation(np.arange(60) % 3) + 3  # blob 2 cut in three: 3-5
    q = assess(x, clusters, 6, neighbours=mine_neighbours(x, 10))
    assert q.n_neighbours == 10
    assert q.agreement[0] == 1.0 and 0 not in q.mixed
    assert {3, 4, 5} <= set(q.mixed)
    pairs = {(a, b) for a, b, _ in q.split}
    assert (1, 2) in pairs and {(3, 4), (3, 5), (4, 5)} <= pairs
    assert not any(0 in p for p in pairs)
    assert q.flags(0) == [] and any("split with cluster 2" in f for f in q.flags(1))
    assert any(f.startswith("possibly mixed") for f in q.flags(4))


def test_confident_share_is_the_margin_above_the_threshold() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8))
    clusters = rng.integers(0, 3, size=50)
    margin = confidence(x, clusters, feature_centroids(x, clusters, 4))
    q = assess(x, clusters, 4)  # cluster 3 is empty; no neighbours: no agreement, no flags
    np.testing.assert_allclose(q.margin, margin)
    for c in range(3):
        assert q.confident[c] == np.mean(margin[clusters == c] >= CONFIDENT_MARGIN)
    assert np.isnan(q.confident[3]) and np.isnan(q.agreement).all()
    assert q.mixed == [] and q.split == [] and q.n_neighbours == 0
