"""icbpl.core.novelty: feature centroids, confidence margin and the calibrated "unassigned" rule,
checked against numpy references and on held-out blobs."""

from __future__ import annotations

import numpy as np
import pytest

from icbpl.core.novelty import calibrate, confidence, feature_centroids, similarity


def blobs(centres: np.ndarray, per: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.repeat(centres, per, axis=0) + noise * rng.standard_normal((len(centres) * per, 16))
    return x.astype(np.float32)


def test_centroids_and_scores_match_a_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 5))
    lab = np.arange(30) % 4
    lab[lab == 3] = 0  # cluster 3 stays empty
    cents = feature_centroids(x, lab, 4)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for c in range(3):
        m = unit[lab == c].mean(axis=0)
        np.testing.assert_allclose(cents[c], m / np.linalg.norm(m), rtol=1e-5)
    assert not cents[3].any()
    cos = unit @ cents[:3].T
    np.testing.assert_allclose(similarity(x, cents), cos.max(axis=1), rtol=1e-5)
    ref = [cos[i, lab[i]] - max(cos[i, j] for j in range(3) if j != lab[i]) for i in range(30)]
    np.testing.assert_allclose(confidence(x, lab, cents), ref, rtol=1e-5, atol=1e-6)


def test_held_out_classes_fall_below_the_threshold() -> None:
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((5, 16))
    train = blobs(centres[:3], 60, 0.4, seed=2)
    lab = np.repeat(np.arange(3), 60)
    held_in, unseen = blobs(centres[:3], 20, 0.4, seed=3), blobs(centres[3:], 30, 0.4, seed=4)
    cents = feature_centroids(train, lab, 3)
    threshold = calibrate(similarity(train, cents))
    assert (similarity(train, cents) < threshold).mean() == pytest.approx(0.05, abs=0.01)
    assert (similarity(unseen, cents) < threshold).mean() > 0.9
    assert (similarity(held_in, cents) < threshold).mean() < 0.2


def test_confidence_is_low_between_two_clusters() -> None:
    cents = np.eye(3, dtype=np.float32)
    x = np.array([[1.0, 0.0, 0.0], [1.0, 0.98, 0.0]])
    conf = confidence(x, np.array([0, 0]), cents)
    assert conf[0] == pytest.approx(1.0) and 0 < conf[1] < 0.05


def test_calibrate_checks_the_quantile() -> None:
    assert calibrate(np.arange(101.0), 0.1) == pytest.approx(10.0)
    with pytest.raises(ValueError, match=r"quantile=1\.5 should be in"):
        calibrate(np.ones(3), 1.5)


def test_blocks_give_the_same_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    import icbpl.core.novelty as novelty

    rng = np.random.default_rng(5)
    x = rng.standard_normal((500, 6)).astype(np.float32)
    lab = rng.integers(0, 4, size=500)
    cents = feature_centroids(x, lab, 5)
    whole = confidence(x, lab, cents), similarity(x, cents)
    monkeypatch.setattr(novelty, "BLOCK", 37)  # 14 blocks, the last one short
    np.testing.assert_allclose(feature_centroids(x, lab, 5), cents, atol=1e-6)
    np.testing.assert_allclose(confidence(x, lab, cents), whole[0], atol=1e-12)
    np.testing.assert_allclose(similarity(x, cents), whole[1], atol=1e-12)
