"""ACC/NMI/ARI against a brute-force reference, hand values and permutation invariance."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from icbpl.core.metrics import cluster_accuracy, cluster_sizes, evaluate, match_clusters
from icbpl.core.selection import label_free_score, neighbour_agreement, size_balance


def _acc_bruteforce(t: np.ndarray, p: np.ndarray, k: int) -> float:
    best = 0.0
    for perm in itertools.permutations(range(k)):
        best = max(best, float(np.mean(np.array(perm)[p] == t)))
    return best


def test_accuracy_matches_bruteforce() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = rng.integers(0, 5, 40)
        p = rng.integers(0, 5, 40)
        assert cluster_accuracy(t, p) == pytest.approx(_acc_bruteforce(t, p, 5))


def test_hand_values() -> None:
    t = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([1, 1, 0, 0, 2, 0])
    assert cluster_accuracy(t, p) == pytest.approx(5 / 6)
    assert match_clusters(t, p) == {1: 0, 0: 1, 2: 2}
    perfect = evaluate(t, np.array([5, 5, 3, 3, 9, 9]))
    assert perfect == {"acc": 1.0, "nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}


def test_relabelling_clusters_changes_nothing() -> None:
    rng = np.random.default_rng(1)
    t = rng.integers(0, 6, 200)
    p = np.where(rng.random(200) < 0.7, t, rng.integers(0, 6, 200))
    perm = rng.permutation(6)
    a, b = evaluate(t, p), evaluate(t, perm[p])
    for key in a:
        assert a[key] == pytest.approx(b[key])


def test_more_clusters_than_classes() -> None:
    t = np.array([0, 0, 1, 1])
    p = np.array([0, 1, 2, 3])
    assert cluster_accuracy(t, p) == pytest.approx(0.5)


def test_sizes_and_errors() -> None:
    np.testing.assert_array_equal(cluster_sizes([0, 2, 2], 4), [1, 0, 2, 0])
    with pytest.raises(ValueError, match="1-D"):
        evaluate(np.zeros((2, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="3 labels but y_pred has 2"):
        cluster_accuracy([0, 1, 1], [0, 1])


def test_label_free_score() -> None:
    nb = np.array([[1], [0], [3], [2]])
    good = np.array([0, 0, 1, 1])
    collapsed = np.zeros(4, dtype=int)
    assert neighbour_agreement(good, nb) == 1.0
    assert size_balance(good, 2) == pytest.approx(1.0)
    assert size_balance(collapsed, 2) == pytest.approx(0.0)
    assert label_free_score(good, nb, 2) > label_free_score(collapsed, nb, 2)
    assert label_free_score(good, None, 2) == pytest.approx(1.0)
