"""Tests for the peer methods (k-means, SCAN, TEMI, TURTLE): losses against numpy references and
against values worked out by hand from the authors' equations, properties, the named schedules,
accuracy on separable synthetic data, determinism, input validation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from icbpl.core.metrics import cluster_accuracy
from icbpl.core.multihead import lr_schedule
from icbpl.peers import (
    PeerResult,
    Schedule,
    _registry,
    fit_peer,
    list_peers,
    peer_options,
    peer_schedules,
    register_peer,
    scan_eval_loss,
    scan_loss,
    scan_self_label_loss,
    schedule_label,
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


# ---------------------------------------------------------------- hand-worked values


LN2 = math.log(2.0)


def _t(rows: list[list[float]]) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_scan_loss_by_hand_two_samples() -> None:
    # Φ(x) = [1, 0], [1/2, 1/2]; Φ(k_x) = [1/2, 1/2] twice: <Φ(x), Φ(k_x)> = 1/2 for both, so
    # consistency = -log(1/2); Φ̄ = [3/4, 1/4], H = -(3/4 log 3/4 + 1/4 log 1/4).
    total, cons, ent = scan_loss(_t([[1, 0], [0.5, 0.5]]), _t([[0.5, 0.5], [0.5, 0.5]]), 5.0)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert cons.item() == pytest.approx(LN2, rel=1e-12)
    assert ent.item() == pytest.approx(h, rel=1e-12)
    assert total.item() == pytest.approx(LN2 - 5.0 * h, rel=1e-12)


def test_scan_consistency_clamps_like_bce_and_keeps_finite_gradients() -> None:
    # orthogonal one-hots: <p, q> = 0 -> nn.BCELoss clamps log(0) at -100; the other pair gives 0
    anchors = _t([[1, 0], [1, 0]]).requires_grad_(True)
    _, cons, _ = scan_loss(anchors, _t([[0, 1], [1, 0]]), 0.0)
    assert cons.item() == pytest.approx(100.0 / 2, rel=1e-12)
    cons.backward()
    assert anchors.grad is not None and torch.isfinite(anchors.grad).all()
    ref = torch.nn.functional.binary_cross_entropy(
        torch.tensor([0.0, 1.0], dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    )
    assert cons.item() == pytest.approx(ref.item(), rel=1e-12)


def test_scan_eval_loss_by_hand_with_self_in_the_pool() -> None:
    # 3 samples, 2 clusters; pool = itself and one neighbour. Φ: x0 = [1, 0], x1 = [1/2, 1/2],
    # x2 = [0, 1]. Pairs: (0,0) 1, (0,1) 1/2, (1,1) 1/2, (1,2) 1/2, (2,2) 1, (2,0) 0 -> -100.
    probs = _t([[1, 0], [0.5, 0.5], [0, 1]])
    pool = torch.tensor([[0, 1], [1, 2], [2, 0]])
    total, cons, ent = scan_eval_loss(probs, pool, entropy_weight=1.0)
    c = (0 + LN2 + LN2 + LN2 + 0 + 100.0) / 6
    assert cons.item() == pytest.approx(c, rel=1e-12)
    assert ent.item() == pytest.approx(LN2, rel=1e-12)  # Φ̄ = [1/2, 1/2]
    assert total.item() == pytest.approx(c - LN2, rel=1e-12)


def test_scan_eval_loss_equals_scan_loss_on_repeated_anchors() -> None:
    rng = np.random.default_rng(11)
    probs = torch.tensor(_softmax(rng.standard_normal((3, 7, 4))))  # 3 heads, 7 samples
    pool = torch.tensor(rng.integers(0, 7, size=(7, 3)))
    got = scan_eval_loss(probs, pool, 5.0)
    ref = scan_loss(probs.repeat_interleave(3, dim=1), probs[:, pool.reshape(-1)], 5.0)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_scan_self_label_loss_by_hand_class_balanced() -> None:
    # weak logits: all three confident (softmax(10, 0) = 0.99995 > 0.99), targets 0, 0, 1;
    # class weights |C| / count = 3/2, 3/2, 3; strong CE: log 2, log(4/3), log 2.
    weak = _t([[10, 0], [10, 0], [0, 10]])
    strong = _t([[0, 0], [math.log(3.0), 0], [0, 0]])
    got = scan_self_label_loss(weak, strong, threshold=0.99, class_balance=True)
    ref = (1.5 * LN2 + 1.5 * math.log(4 / 3) + 3.0 * LN2) / 6.0
    assert got.item() == pytest.approx(ref, rel=1e-12)


def test_temi_loss_by_hand_one_head() -> None:
    # pair 1: all one-hot [1, 0] -> pmi = log(1 / (1/2)) = log 2, weight 1, loss -log 2;
    # pair 2: all uniform -> pmi = log(2 (1/4)^β / (1/2)) = log 2 at β = 1/2, weight 1/2,
    # loss -log 2 / 2. Mean over the two pairs: -3/4 log 2.
    p = _t([[1, 0], [0.5, 0.5]])
    prior = torch.tensor([0.5, 0.5], dtype=torch.float64)
    loss = temi_loss(p, p, p, p, prior, beta=0.5)
    assert loss.item() == pytest.approx(-0.75 * LN2, rel=1e-12)


def test_temi_weight_is_shared_by_the_heads() -> None:
    # one pair, two heads: head 0's teacher agrees (<t, t'> = 1), head 1's disagrees (0), so
    # both heads use w = 1/2 (the authors average the teacher similarity over heads). Students
    # [1, 0] with prior [1/2, 1/2], β = 1: head 0 pmi = log 2 both ways; head 1:
    # pmi(s', t) = log(1·1 / (1/2)) = log 2 and pmi(s, t') = log(0 + 0) -> -inf is avoided by
    # using students [1/2, 1/2] for head 1: pmi = log((1/2)/(1/2)) = 0 both ways.
    s = torch.stack([_t([[1, 0]]), _t([[0.5, 0.5]])])
    ta = torch.stack([_t([[1, 0]]), _t([[1, 0]])])
    tb = torch.stack([_t([[1, 0]]), _t([[0, 1]])])
    prior = torch.full((2, 2), 0.5, dtype=torch.float64)
    loss = temi_loss(s, s, ta, tb, prior, beta=1.0)
    assert loss[0].item() == pytest.approx(-0.5 * 0.5 * (LN2 + LN2), rel=1e-12)
    assert loss[1].item() == pytest.approx(0.0, abs=1e-12)


def test_turtle_loss_by_hand_one_and_two_spaces() -> None:
    # one space: τ = one-hots [1, 0], [0, 1]; inner logits 0 -> CE = log 2 per sample;
    # τ̄ = [1/2, 1/2], H = log 2; total = log 2 - 10 log 2.
    total, pred, ent = turtle_loss(
        _t([[1, 0], [0, 1]]), torch.zeros(2, 2, dtype=torch.float64), gamma=10.0
    )
    assert (pred.item(), ent.item()) == pytest.approx((LN2, LN2), rel=1e-12)
    assert total.item() == pytest.approx(-9.0 * LN2, rel=1e-12)
    # two spaces: τ_1 = [1, 0] for both samples, τ_2 = [0, 1]: the labels are their mean
    # [1/2, 1/2]; each space's marginal is one-hot (entropy 0). Space 1 logits 0: CE log 2;
    # space 2 logits (log 3, 0): CE = -(log 3/4 + log 1/4) / 2.
    tau1, tau2 = _t([[1, 0], [1, 0]]), _t([[0, 1], [0, 1]])
    logits2 = _t([[math.log(3.0), 0], [math.log(3.0), 0]])
    total, pred, ent = turtle_loss(
        [tau1, tau2], [torch.zeros(2, 2, dtype=torch.float64), logits2], gamma=10.0
    )
    ce2 = -(math.log(0.75) + math.log(0.25)) / 2
    assert pred.item() == pytest.approx(LN2 + ce2, rel=1e-12)
    assert ent.item() == pytest.approx(0.0, abs=1e-12)
    assert total.item() == pytest.approx(LN2 + ce2, rel=1e-12)


def test_lr_schedule_is_dinos_cosine_scheduler() -> None:
    # warm-up linspace(0, 1, 3) = 0, 1/2, 1; then 0 + (1 - 0)(1 + cos(pi i / 2)) / 2, i = 0, 1
    assert lr_schedule(1.0, 0.0, 5, 3) == pytest.approx([0.0, 0.5, 1.0, 1.0, 0.5])
    assert lr_schedule(2.0, 2.0, 4) == pytest.approx([2.0] * 4)  # TEMI: lr = min_lr


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_losses_ignore_cluster_relabelling_and_sample_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k, b = 4, 6
    perm_c, perm_b = rng.permutation(k), rng.permutation(b)
    pa, pb, ta, tb = (torch.tensor(_softmax(rng.standard_normal((b, k)))) for _ in range(4))
    prior = torch.tensor(_softmax(rng.standard_normal(k)))
    logits = torch.tensor(rng.standard_normal((b, k)))

    def both(f: Any, *args: Tensor) -> tuple[Any, Any]:
        moved = [a[perm_b][:, perm_c] if a.ndim == 2 else a[perm_c] for a in args]
        return f(*args), f(*moved)

    a, c = both(lambda x, y: scan_loss(x, y)[0], pa, pb)
    assert a.item() == pytest.approx(c.item(), rel=1e-12)
    a, c = both(lambda *x: temi_loss(*x, beta=0.6), pa, pb, ta, tb, prior)
    assert a.item() == pytest.approx(c.item(), rel=1e-12)
    a, c = both(lambda x, y: turtle_loss(x, y)[0], pa, logits)
    assert a.item() == pytest.approx(c.item(), rel=1e-12)


def test_turtle_loss_of_repeated_spaces_scales_with_their_number() -> None:
    rng = np.random.default_rng(6)
    tau = torch.tensor(_softmax(rng.standard_normal((5, 3))))
    logits = torch.tensor(rng.standard_normal((5, 3)))
    one = turtle_loss(tau, logits, gamma=2.0)
    three = turtle_loss([tau] * 3, [logits] * 3, gamma=2.0)
    for a, b in zip(one, three, strict=True):
        assert b.item() == pytest.approx(3 * a.item(), rel=1e-12)


def test_scan_loss_falls_under_gradient_steps() -> None:
    torch.manual_seed(0)
    logits = torch.randn(8, 3, requires_grad=True)
    pairs = torch.tensor([1, 0, 3, 2, 5, 4, 7, 6])
    opt = torch.optim.SGD([logits], lr=0.5)
    values = []
    for _ in range(20):
        p = logits.softmax(-1)
        total = scan_loss(p, p[pairs], 1.0)[0]
        values.append(total.item())
        opt.zero_grad()
        total.backward()
        opt.step()
    assert values[-1] < values[0] - 0.1


# ---------------------------------------------------------------- schedules


def test_schedules_official_first_and_the_default() -> None:
    for name in list_peers():
        table = peer_schedules(name)
        assert next(iter(table)) == "official"
        assert all(isinstance(v, Schedule) and v.label for v in table.values())
    assert list(peer_schedules("scan")) == ["official", "tuned"]
    assert list(peer_schedules("temi")) == ["official", "tuned"]
    assert list(peer_schedules("turtle")) == ["official"]
    official, tuned = peer_options("scan"), peer_options("scan", "tuned")
    assert (official["n_heads"], official["lr"], official["self_label_epochs"]) == (1, 1e-4, 200)
    assert (tuned["n_heads"], tuned["lr"], tuned["self_label_epochs"]) == (10, 1e-3, 50)
    assert peer_options("temi")["epochs"] == 100 and peer_options("temi")["batch_size"] == 1024
    assert peer_options("temi", "tuned")["use_views"] is True
    assert peer_options("turtle")["iterations"] == 6000


def test_unknown_schedule_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no schedule 'tuned'.*\['official'\]"):
        fit_peer("turtle", RNG.random((10, 2)), 2, schedule="tuned")
    with pytest.raises(ValueError, match="unknown peer"):
        peer_schedules("dec")


def test_schedule_with_an_unknown_option_is_refused() -> None:
    def peer(X: Tensor, n_clusters: int, *, neighbours: Any, views: Any, seed: int) -> PeerResult:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match=r"sets unknown \['epochs'\]"):
        register_peer("bad-schedule", {"tuned": Schedule({"epochs": 3})})(peer)
    assert "bad-schedule" not in list_peers()
    with pytest.raises(ValueError, match=r"minimums of peer 'bad-min' sets unknown \['epochs'\]"):
        register_peer("bad-min", minimums={"epochs": 1})(peer)
    assert "bad-min" not in list_peers()


def test_minimums_are_checked_before_the_peer_runs() -> None:
    """Each registered minimum, from the schedule or the call, in the order declared."""
    x = RNG.random((12, 3))
    with pytest.raises(ValueError, match=r"^self_label_epochs=-1 should be >= 0$"):
        fit_peer("scan", x, 2, self_label_epochs=-1)
    with pytest.raises(ValueError, match=r"^n_heads=0 should be >= 1$"):
        fit_peer("scan", x, 2, schedule="tuned", n_heads=0, epochs=0)
    with pytest.raises(ValueError, match=r"^warmup_epochs=-2 should be >= 0$"):
        fit_peer("temi", x, 2, warmup_epochs=-2)


@pytest.mark.filterwarnings("ignore:.*clusters are empty")
def test_schedule_switch_sets_the_options_and_labels_the_run() -> None:
    x = RNG.random((40, 5)).astype(np.float32)
    short = {"epochs": 2, "self_label_epochs": 1}
    tuned = fit_peer("scan", x, 3, seed=1, schedule="tuned", **short)
    assert tuned.info["n_heads"] == 10 and tuned.info["selection"] == "last_epoch"
    assert tuned.info["schedule"] == "tuned" and tuned.info["overrides"] == short
    assert tuned.info["schedule_label"] == schedule_label("scan", "tuned", short)
    assert tuned.info["schedule_label"].startswith("tuned (10 heads")
    assert tuned.info["schedule_label"].endswith("changed: epochs 2, self_label_epochs 1")
    # the schedule is only a set of options: spelling them out gives the same run
    options = {**peer_schedules("scan")["tuned"].options, **short}
    spelled = fit_peer("scan", x, 3, seed=1, **options)
    np.testing.assert_array_equal(tuned.labels, spelled.labels)
    assert spelled.info["schedule"] == "official"
    official = fit_peer("scan", x, 3, seed=1, **short)
    assert official.info["n_heads"] == 1 and official.info["selection"] == "best_epoch"
    assert schedule_label("scan") == "official (" + peer_schedules("scan")["official"].label + ")"


@pytest.mark.filterwarnings("ignore:.*clusters are empty")
def test_temi_official_ignores_views_tuned_uses_them(
    blobs: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x, _, views = blobs
    kw = {**TINY["temi"], "batch_size": 64}
    assert not fit_peer("temi", x[:100], 3, views=views[:, :100], **kw).info["used_views"]
    tuned = fit_peer("temi", x[:100], 3, views=views[:, :100], schedule="tuned", **kw)
    assert tuned.info["used_views"]


@pytest.mark.filterwarnings("ignore:.*clusters are empty")
def test_scan_best_epoch_keeps_the_lowest_evaluation_loss() -> None:
    x = RNG.random((60, 4)).astype(np.float32)
    nb = _brute_neighbours(x, 6)
    res = fit_peer("scan", x, 3, neighbours=nb, epochs=4, self_label=False, lr=1e-2, seed=3)
    assert 1 <= res.info["best_epoch"] <= 4
    pool = torch.cat([torch.arange(60).unsqueeze(1), torch.from_numpy(nb[:, :5])], dim=1)
    total, _, _ = scan_eval_loss(torch.from_numpy(res.probs), pool, 1.0)
    assert total.item() == pytest.approx(res.info["selection_loss"], rel=1e-4)


def test_turtle_several_spaces() -> None:
    rng = np.random.default_rng(8)
    y = np.repeat(np.arange(3), 30)
    a = np.eye(3)[y] * 3 + 0.3 * rng.standard_normal((90, 3))
    b = np.eye(3)[y] @ rng.standard_normal((3, 7)) * 3 + 0.3 * rng.standard_normal((90, 7))
    res = fit_peer("turtle", a, 3, spaces=[b], iterations=150, inner_lr=1e-2, outer_lr=1e-2)
    assert res.info["n_spaces"] == 2
    assert res.info["overrides"]["spaces"] == "[<ndarray (90, 7)>]"  # JSON-friendly
    assert cluster_accuracy(y, res.labels) >= 0.95
    with pytest.raises(ValueError, match=r"spaces\[0\] should have shape \(90, n_features\)"):
        fit_peer("turtle", a, 3, spaces=[b[:10]], iterations=1)


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
