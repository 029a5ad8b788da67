"""Tests for the peer methods (k-means, SCAN, TEMI, TURTLE): losses against numpy references,
accuracy on separable synthetic data, determinism, input validation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from icbpl.core.metrics import cluster_accuracy
from icbpl.peers import (
    PeerResult,
    _registry,
    fit_peer,
    list_peers,
    peer_options,
    scan_loss,
    scan_self_label_loss,
    temi_loss,
    turtle_loss,
)
from icbpl.peers._turtle import _InnerClassifier

K = 6
RNG = np.random.default_rng(42)


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """600 points in 6 well-separated clusters on the 32-D unit sphere, and 2 noisy views."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((K, 32))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(K), 100)
    x = centres[y] + 0.15 * rng.standard_normal((600, 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    views = x[None] + 0.05 * rng.standard_normal((2, 600, 32))
    views /= np.linalg.norm(views, axis=2, keepdims=True)
    return x.astype(np.float32), y, views.astype(np.float32)


def _brute_neighbours(x: np.ndarray, k: int) -> np.ndarray:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn @ xn.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


# ---------------------------------------------------------------- losses vs numpy references


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_scan_loss_matches_numpy_loop() -> None:
    rng = np.random.default_rng(1)
    pa = _softmax(rng.standard_normal((2, 5, 3)))  # 2 heads, 5 anchors, 3 clusters
    pn = _softmax(rng.standard_normal((2, 5, 3)))
    total, cons, ent = scan_loss(torch.tensor(pa), torch.tensor(pn), entropy_weight=5.0)
    for h in range(2):
        c = -sum(math.log(sum(pa[h, i, j] * pn[h, i, j] for j in range(3))) for i in range(5)) / 5
        mean = [sum(pa[h, i, j] for i in range(5)) / 5 for j in range(3)]
        e = -sum(m * math.log(m) for m in mean)
        assert cons[h].item() == pytest.approx(c, rel=1e-10)
        assert ent[h].item() == pytest.approx(e, rel=1e-10)
        assert total[h].item() == pytest.approx(c - 5.0 * e, rel=1e-10)


def test_scan_loss_hand_values() -> None:
    uniform = torch.full((4, 3), 1 / 3, dtype=torch.float64)
    total, cons, ent = scan_loss(uniform, uniform, entropy_weight=2.0)
    assert cons.item() == pytest.approx(math.log(3))  # <u, u> = 1/3
    assert ent.item() == pytest.approx(math.log(3))
    assert total.item() == pytest.approx(-math.log(3))
    onehot = torch.eye(3, dtype=torch.float64)
    _, cons, ent = scan_loss(onehot, onehot)
    assert cons.item() == pytest.approx(0.0, abs=1e-12)
    assert ent.item() == pytest.approx(math.log(3))


def test_scan_self_label_loss_matches_numpy() -> None:
    weak = np.array([[9.0, 0, 0], [0, 8, 0], [7, 0, 0], [0.1, 0, 0], [10, 0, 0]])
    strong = np.random.default_rng(2).standard_normal((5, 3))
    got = scan_self_label_loss(torch.tensor(weak), torch.tensor(strong), threshold=0.99)
    p = _softmax(weak)
    conf = [i for i in range(5) if p[i].max() > 0.99]  # rows 0, 1, 2, 4
    targets = [int(p[i].argmax()) for i in conf]
    counts = {c: targets.count(c) for c in set(targets)}
    weights = [len(conf) / counts[t] for t in targets]
    logp = np.log(_softmax(strong))
    num = sum(w * -logp[i, t] for w, i, t in zip(weights, conf, targets, strict=True))
    assert got.item() == pytest.approx(num / sum(weights), rel=1e-10)
    unbalanced = scan_self_label_loss(
        torch.tensor(weak), torch.tensor(strong), threshold=0.99, class_balance=False
    )
    plain = np.mean([-logp[i, t] for i, t in zip(conf, targets, strict=True)])
    assert unbalanced.item() == pytest.approx(plain, rel=1e-10)


def test_scan_self_label_loss_no_confident_sample_is_zero_with_graph() -> None:
    strong = torch.randn(4, 3, requires_grad=True)
    loss = scan_self_label_loss(torch.zeros(4, 3), strong)
    assert loss.item() == 0.0
    loss.backward()
    assert strong.grad is not None


def test_temi_loss_matches_numpy_loop() -> None:
    rng = np.random.default_rng(3)
    h, b, k, beta = 2, 3, 4, 0.6
    sa, sb, ta, tb = (_softmax(rng.standard_normal((h, b, k))) for _ in range(4))
    prior = _softmax(rng.standard_normal((h, k)))
    got = temi_loss(*(torch.tensor(a) for a in (sa, sb, ta, tb, prior)), beta=beta)
    for hi in range(h):
        terms = []
        for i in range(b):
            # instance weight: teacher agreement, averaged over heads
            w = np.mean([sum(ta[g, i, c] * tb[g, i, c] for c in range(k)) for g in range(h)])

            def pmi(s: np.ndarray, t: np.ndarray, i: int = i, hi: int = hi) -> float:
                return math.log(
                    sum((s[hi, i, c] * t[hi, i, c]) ** beta / prior[hi, c] for c in range(k))
                )

            terms.append(-0.5 * w * (pmi(sb, ta) + pmi(sa, tb)))
        assert got[hi].item() == pytest.approx(np.mean(terms), rel=1e-10)


def test_temi_loss_single_head_and_teacher_gets_no_gradient() -> None:
    rng = np.random.default_rng(4)
    sa, sb, ta, tb = (torch.tensor(_softmax(rng.standard_normal((3, 4)))) for _ in range(4))
    ta.requires_grad_(True)
    sa.requires_grad_(True)
    prior = torch.full((4,), 0.25, dtype=torch.float64)
    loss = temi_loss(sa, sb, ta, tb, prior, beta=1.0)
    assert loss.ndim == 0
    loss.backward()
    assert ta.grad is None and sa.grad is not None and torch.isfinite(sa.grad).all()
    # beta = 1, uniform prior, no weight: -mean log(k * <s, t>) (up to the weight)
    w = (ta * tb).sum(-1).detach()
    ref = -0.5 * w * (torch.log(4 * (sb * ta).sum(-1)) + torch.log(4 * (sa * tb).sum(-1)))
    assert loss.item() == pytest.approx(ref.mean().item(), rel=1e-10)


def test_turtle_loss_matches_numpy() -> None:
    rng = np.random.default_rng(5)
    tau = _softmax(rng.standard_normal((6, 3)))
    logits = rng.standard_normal((6, 3))
    total, pred, ent = turtle_loss(torch.tensor(tau), torch.tensor(logits), gamma=10.0)
    logq = np.log(_softmax(logits))
    ce = -np.mean([sum(tau[i, c] * logq[i, c] for c in range(3)) for i in range(6)])
    mean = tau.mean(axis=0)
    h = -sum(m * math.log(m) for m in mean)
    assert pred.item() == pytest.approx(ce, rel=1e-10)
    assert ent.item() == pytest.approx(h, rel=1e-10)
    assert total.item() == pytest.approx(ce - 10.0 * h, rel=1e-10)


def test_turtle_gradient_flows_through_labels_only() -> None:
    tau = torch.randn(5, 3, requires_grad=True)
    logits = torch.randn(5, 3, requires_grad=True)
    total, _, _ = turtle_loss(tau.softmax(-1), logits)
    total.backward()
    assert logits.grad is None and tau.grad is not None and torch.isfinite(tau.grad).all()


def test_turtle_inner_classifier_equals_torch_adam() -> None:
    torch.manual_seed(0)
    z = torch.randn(20, 5)
    target = torch.randn(20, 3).softmax(-1)
    torch.manual_seed(1)
    inner = _InnerClassifier(5, 3, torch.device("cpu"), lr=0.05)
    lin = torch.nn.Linear(5, 3)
    with torch.no_grad():
        lin.weight.copy_(inner.params[0])
        lin.bias.copy_(inner.params[1])
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    for _ in range(7):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(z), target).backward()
        opt.step()
    inner.fit(z, target, 7)
    torch.testing.assert_close(inner.params[0], lin.weight.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(inner.params[1], lin.bias.detach(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- front door

FAST: dict[str, dict[str, Any]] = {
    "kmeans": {},
    "scan": {"lr": 1e-2, "self_label_lr": 1e-2, "epochs": 30, "self_label_epochs": 10},
    "temi": {
        "n_heads": 4,
        "hidden_dim": 128,
        "bottleneck_dim": 64,
        "epochs": 80,
        "batch_size": 128,
        "lr": 1e-3,
        "min_lr": 1e-3,
    },
    "turtle": {"iterations": 200, "inner_lr": 1e-2, "outer_lr": 1e-2},
}

TINY: dict[str, dict[str, Any]] = {
    "kmeans": {"n_init": 2},
    "scan": {"n_heads": 2, "epochs": 2, "self_label_epochs": 2},
    "temi": {"n_heads": 2, "hidden_dim": 16, "bottleneck_dim": 8, "epochs": 3, "batch_size": 64},
    "turtle": {"iterations": 5, "inner_steps": 2},
}


def test_registry_lists_the_four_peers() -> None:
    assert list_peers() == ["kmeans", "scan", "temi", "turtle"]
    assert set(FAST) == set(list_peers())
    assert peer_options("temi")["beta"] == 0.6
    assert peer_options("turtle")["gamma"] == 10.0
    assert peer_options("scan")["entropy_weight"] == 5.0


def test_unknown_peer_lists_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown peer 'dec'.*kmeans.*turtle"):
        fit_peer("dec", np.zeros((10, 2)), 2)


def test_unknown_option_is_named() -> None:
    with pytest.raises(TypeError, match=r"unknown options \['epoch'\].*epochs"):
        fit_peer("scan", RNG.random((10, 2)), 2, epoch=3)


@pytest.mark.parametrize("name", ["kmeans", "scan", "temi", "turtle"])
def test_peer_separates_blobs(name: str, blobs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, y, views = blobs
    kwargs: dict[str, Any] = dict(FAST[name])
    if name == "temi":
        kwargs["neighbours"] = _brute_neighbours(x, 50)  # given neighbours are used as they are
    res = fit_peer(name, x, K, views=views if name == "scan" else None, seed=0, **kwargs)
    assert isinstance(res, PeerResult)
    assert res.labels.shape == (600,) and res.labels.dtype == np.int64
    assert cluster_accuracy(y, res.labels) >= 0.95
    assert res.info["method"] == name and res.info["n_empty_clusters"] == 0
    if name == "kmeans":
        assert res.probs is None
    else:
        assert res.probs is not None and res.probs.shape == (600, K)
        np.testing.assert_allclose(res.probs.sum(1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(res.probs.argmax(1), res.labels)


@pytest.mark.filterwarnings("ignore:.*clusters are empty")
@pytest.mark.parametrize("name", ["kmeans", "scan", "temi", "turtle"])
def test_same_seed_same_result(name: str, blobs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, _, views = blobs
    x, views = x[:200], views[:, :200]
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = fit_peer(name, x, K, views=views, seed=7, **TINY[name])
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is left alone
    b = fit_peer(name, torch.from_numpy(x), K, views=views, seed=7, device="cpu", **TINY[name])
    np.testing.assert_array_equal(a.labels, b.labels)
    if a.probs is not None and b.probs is not None:
        np.testing.assert_array_equal(a.probs, b.probs)


@pytest.mark.filterwarnings("ignore:.*clusters are empty")
def test_neighbours_mined_capped_or_truncated() -> None:
    x = RNG.random((12, 3))
    mined = fit_peer("temi", x, 2, **TINY["temi"])  # default 50 neighbours, capped at N - 1
    assert mined.info["n_neighbours"] == 11
    given = np.stack([(np.arange(12) + s) % 12 for s in range(1, 6)], axis=1)
    cut = fit_peer("scan", x, 2, neighbours=given, n_neighbours=3, **TINY["scan"])
    assert cut.info["n_neighbours"] == 3
    whole = fit_peer("scan", x, 2, neighbours=torch.from_numpy(given), **TINY["scan"])
    assert whole.info["n_neighbours"] == 5


def test_empty_clusters_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    def constant(
        X: Tensor, n_clusters: int, *, neighbours: Any, views: Any, seed: int
    ) -> PeerResult:
        return PeerResult(labels=np.zeros(len(X), dtype=np.int64), probs=None, info={})

    monkeypatch.setitem(_registry._PEERS, "constant", constant)
    with pytest.warns(UserWarning, match="2 of 3 clusters are empty"):
        res = fit_peer("constant", RNG.random((5, 2)), 3)
    assert res.info["n_empty_clusters"] == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"X": [[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]]}, ValueError, "NaN"),
        ({"X": [[0.0, np.inf], [1.0, 2.0], [3.0, 4.0]]}, ValueError, "NaN or inf"),
        ({"n_clusters": 1}, ValueError, r"n_clusters=1 should be >= 2"),
        ({"n_clusters": 2.0}, TypeError, "n_clusters should be an int"),
        ({"X": np.zeros((3, 2)), "n_clusters": 4}, ValueError, r"n_samples=3 .* n_clusters=4"),
        ({"X": np.zeros(6)}, ValueError, "2-D"),
        ({"views": np.zeros((2, 5, 3))}, ValueError, r"views should have shape \(n_views, 6, 2\)"),
        ({"views": np.full((1, 6, 2), np.nan)}, ValueError, "views contains NaN"),
        ({"neighbours": np.zeros((5, 2), dtype=int)}, ValueError, r"shape \(6, n_neighbours\)"),
        ({"neighbours": np.full((6, 2), 6)}, ValueError, r"lie in \[0, 6\)"),
        ({"neighbours": np.zeros((6, 2))}, TypeError, "integer"),
        ({"seed": None}, TypeError, "seed should be an int"),
    ],
)
def test_bad_inputs(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    args: dict[str, Any] = {"X": RNG.random((6, 2)), "n_clusters": 2}
    args.update(kwargs)
    for name in ("kmeans", "scan"):
        with pytest.raises(error, match=match):
            fit_peer(name, **args)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("scan", {"epochs": 0}),
        ("temi", {"beta": 0.0}),
        ("turtle", {"iterations": 0}),
        ("kmeans", {"n_init": 0}),
        ("scan", {"n_neighbours": 0}),
    ],
)
def test_bad_options(name: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="should be"):
        fit_peer(name, RNG.random((12, 3)), 2, **kwargs)
