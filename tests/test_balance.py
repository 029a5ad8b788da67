"""icbpl.core.balance: offsets that fill every cluster, and change nothing when none is short."""

from __future__ import annotations

import numpy as np
import pytest

from icbpl.core.balance import fill_offsets, min_cluster_size


@pytest.mark.parametrize("seed", range(20))
def test_every_cluster_reaches_the_minimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(60, 400)), int(rng.integers(2, 30))
    scores = rng.normal(size=(n, k))
    scores[:, : k // 2] += 3.0  # half the clusters win nothing without offsets
    m = min_cluster_size(n, k)
    b = fill_offsets(scores, m)
    assert np.bincount((scores + b).argmax(1), minlength=k).min() >= m


def test_offsets_are_zero_when_no_cluster_is_short() -> None:
    labels = np.arange(100) % 5
    scores = np.eye(5)[labels] + np.random.default_rng(0).normal(0, 0.01, (100, 5))
    assert not fill_offsets(scores, min_cluster_size(100, 5)).any()


def test_reference_two_clusters() -> None:
    # every sample prefers cluster 0; cluster 1 needs 1 sample: the one with the best score 1
    scores = np.array([[1.0, 0.2], [1.0, 0.9], [1.0, 0.1]])
    b = fill_offsets(scores, 1)
    assert list((scores + b).argmax(1)) == [0, 1, 0]
    assert b[1] == pytest.approx(0.1, abs=1e-5)


def test_too_few_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot fill"):
        fill_offsets(np.zeros((3, 2)), 2)
