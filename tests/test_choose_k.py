"""choose_k (silhouette gap): finds k on clear structure and near 10 on the digits, says when
no k stands out, rejects bad input."""

from __future__ import annotations

import numpy as np
import pytest

from icbpl.model.choose_k import ChooseKResult, choose_k, clarity


def sphere_blobs(k: int, *, per: int = 60, dim: int = 16, noise: float = 0.15, seed: int = 0):
    """``k`` well-separated Gaussian blobs around random unit vectors, projected on the sphere."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(k), per)
    x = centres[labels] + noise * rng.standard_normal((k * per, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


@pytest.mark.parametrize("k", [3, 5, 8])
def test_default_criterion_finds_k_of_blobs(k: int) -> None:
    x, _ = sphere_blobs(k, seed=k)
    result = choose_k(x, range(2, 13), n_repeats=2)
    assert isinstance(result, ChooseKResult)
    assert result.best_k == k
    assert result.details["top"][0] == k


def test_result_fields_and_determinism() -> None:
    x, _ = sphere_blobs(4, per=40, seed=2)
    a = choose_k(x, [6, 3, 4, 4, 2], n_repeats=2, seed=3)
    b = choose_k(x, [6, 3, 4, 4, 2], n_repeats=2, seed=3)
    assert list(a.scores) == [2, 3, 4, 6]  # sorted, duplicates dropped
    assert a.scores == b.scores and a.best_k == b.best_k == 4
    assert all(len(v) == 2 for v in a.details["per_repeat"].values())
    assert a.details["top"] == sorted(a.scores, key=lambda k: (-a.scores[k], k))[:3]
    assert np.isfinite(list(a.scores.values())).all()


def test_subsamples() -> None:
    x, _ = sphere_blobs(3, per=100, seed=4)
    sub = choose_k(x, range(2, 7), n_samples=120, n_repeats=2)
    assert sub.best_k == 3 and sub.details["n_samples"] == 120


def test_confirm_refits_icbpl_on_top_candidates() -> None:
    x, _ = sphere_blobs(3, per=40, seed=5)
    views = (x + 0.02 * np.random.default_rng(0).standard_normal(x.shape)).astype(np.float32)
    result = choose_k(
        x, range(2, 6), n_repeats=1, views=views[None], confirm=2, epochs=3, latent_dim=8
    )
    confirmed = result.details["confirmed"]
    assert len(confirmed) == 2 and result.details["screen_k"] in confirmed
    assert result.best_k == max(confirmed, key=confirmed.get)


def test_digits_within_one_of_ten() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.astype(np.float32) / 16.0
    result = choose_k(x, range(2, 21), n_repeats=2)
    assert abs(result.best_k - 10) <= 1, result.details["top"]


def test_clarity_names_far_rivals() -> None:
    ks = [4, 5, 6, 10, 12]
    # 12 scores like 5 (and is > 20% away): no clear answer, both named
    rep = {4: [0.1, 0.1], 5: [0.30, 0.30], 6: [0.25, 0.25], 10: [0.1, 0.1], 12: [0.299, 0.299]}
    assert clarity(ks, rep, 5) == (False, "no clear k: best candidates 5, 12")
    rep[12] = [0.2, 0.2]  # a clear winner; a near neighbour (6) close in score is no rival
    rep[6] = [0.299, 0.299]
    assert clarity(ks, rep, 5) == (True, "k=5 (best candidates 5, 6, 12)")
    # the tolerance widens with the spread over repeats
    rep[12] = [0.25, 0.33]
    rep[5] = [0.2, 0.4]
    assert clarity(ks, rep, 5)[0] is False


def test_tiny_input() -> None:
    x, _ = sphere_blobs(2, per=4, noise=0.05)  # 8 rows
    result = choose_k(x, range(2, 8))
    assert result.best_k in range(2, 8) and np.isfinite(list(result.scores.values())).all()


@pytest.mark.parametrize(
    ("k_range", "match"),
    [
        ([], "k_range is empty"),
        (range(1, 5), "should be >= 2"),
        ([2, 0], "should be >= 2"),
        ([2, 60], "n_samples=60"),
        (["a"], "should be integers"),
    ],
)
def test_bad_k_range(k_range: list[int], match: str) -> None:
    x, _ = sphere_blobs(3, per=20)
    with pytest.raises(ValueError, match=match):
        choose_k(x, k_range)


def test_bad_inputs() -> None:
    x, _ = sphere_blobs(3, per=20)
    bad = x.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        choose_k(bad, range(2, 5))
    with pytest.raises(ValueError, match="raise n_samples"):
        choose_k(x, range(2, 30), n_samples=20)
    with pytest.raises(ValueError, match="n_repeats=0"):
        choose_k(x, range(2, 5), n_repeats=0)
    with pytest.raises(ValueError, match="views should have shape"):
        choose_k(x, range(2, 5), views=np.zeros((2, 5, 16)), confirm=1, epochs=1)


def test_progress_bar_counts_every_scoring(capsys: pytest.CaptureFixture[str]) -> None:
    x, _ = sphere_blobs(3, per=30, seed=4)
    quiet = choose_k(x, range(2, 6), n_repeats=2)
    assert "choosing k" not in capsys.readouterr().err
    shown = choose_k(x, range(2, 6), n_repeats=2, progress=True)
    err = capsys.readouterr().err
    assert "choosing k" in err and "8/8" in err  # 2 repeats x 4 candidates
    assert shown.scores == quiet.scores  # the bar changes nothing else
