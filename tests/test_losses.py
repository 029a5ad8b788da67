"""The losses against short numpy references, hand values, and gradient properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icbpl.core.losses import (
    augmentation_loss,
    distance,
    min_distance_loss,
    mmd_loss,
    neighbour_loss,
)
from icbpl.core.objective import LossWeights, icbpl_objective
from icbpl.core.pedcc import make_pedcc


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _mmd_reference(z: np.ndarray, c: np.ndarray) -> float:
    """Loop version of the authors' multi-kernel MMD with centroids tiled in order."""
    n = len(z)
    target = np.array([c[i % len(c)] for i in range(n)])
    total = np.concatenate([z, target])
    m = len(total)
    d2 = np.array([[np.sum((total[i] - total[j]) ** 2) for j in range(m)] for i in range(m)])
    bw = d2.sum() / (m * m - m) / 4.0
    k = sum(np.exp(-d2 / (bw * 2.0**i)) for i in range(5))
    return float(np.mean(k[:n, :n] + k[n:, n:] - k[:n, n:] - k[n:, :n]))


def _mmd_uniform_reference(z: np.ndarray, c: np.ndarray) -> float:
    """Loop version of the MMD between the batch and the uniform distribution over ``c``, the
    bandwidth counting each point as ``N / k`` rows (the tiling made fractional)."""
    n, k = len(z), len(c)
    r = n / k

    def d2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.array([[np.sum((p - q) ** 2) for q in b] for p in a])

    d_xx, d_xc, d_cc = d2(z, z), d2(z, c), d2(c, c)
    bw = (d_xx.sum() + 2 * r * d_xc.sum() + r * r * d_cc.sum()) / ((2 * n) ** 2 - 2 * n) / 4.0

    def kern(d: np.ndarray) -> np.ndarray:
        return sum(np.exp(-d / (bw * 2.0**i)) for i in range(5))

    return float(kern(d_xx).mean() + kern(d_cc).mean() - 2 * kern(d_xc).mean())


def test_mmd_matches_reference() -> None:
    rng = np.random.default_rng(0)
    z, c = _unit(rng, 12, 5), make_pedcc(4, 5)
    got = mmd_loss(torch.from_numpy(z), torch.from_numpy(c)).item()
    assert got == pytest.approx(_mmd_reference(z, c), rel=1e-9, abs=1e-12)
    # k divides N: the uniform target is the authors' tiling
    assert got == pytest.approx(_mmd_uniform_reference(z, c), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("n", [3, 13, 30])
def test_mmd_uniform_target_when_k_does_not_divide_n(n: int) -> None:
    rng = np.random.default_rng(n)
    z, c = _unit(rng, n, 6), make_pedcc(7, 6)
    got = mmd_loss(torch.from_numpy(z), torch.from_numpy(c)).item()
    assert got == pytest.approx(_mmd_uniform_reference(z, c), rel=1e-9, abs=1e-12)
    # no point is favoured: the order of the PEDCC points does not matter (tiling cut at N
    # would see only the first N points when N < k)
    perm = rng.permutation(len(c))
    again = mmd_loss(torch.from_numpy(z), torch.from_numpy(c[perm])).item()
    assert again == pytest.approx(got, rel=1e-9)


def test_mmd_is_zero_when_distributions_match() -> None:
    c = make_pedcc(5, 8)
    z = torch.from_numpy(np.tile(c, (3, 1)))
    assert mmd_loss(z, torch.from_numpy(c)).item() == pytest.approx(0.0, abs=1e-12)


def test_distances_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0]])
    assert distance(a, b, "cosine").item() == pytest.approx(1.0)
    assert distance(a, -a, "cosine").item() == pytest.approx(2.0)
    assert distance(a, b, "euclidean").item() == pytest.approx(np.sqrt(2.0), rel=1e-6)
    # composite: 2.1 - 2 cos + 8/3 * mean|a - b| = 2.1 + 8/3 * 1
    assert distance(a, b, "composite_cosine").item() == pytest.approx(2.1 + 8.0 / 3.0)
    with pytest.raises(ValueError, match="expected one of"):
        distance(a, b, "manhattan")


def test_augmentation_and_neighbour_losses_match_loops() -> None:
    rng = np.random.default_rng(1)
    z, views, nbs = _unit(rng, 6, 4), rng.standard_normal((3, 6, 4)), rng.standard_normal((6, 2, 4))

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    ref_aug = np.mean([1 - cos(z[i], views[v, i]) for v in range(3) for i in range(6)])
    ref_nb = np.mean([1 - cos(z[i], nbs[i, j]) for i in range(6) for j in range(2)])
    zt = torch.from_numpy(z)
    assert augmentation_loss(zt, torch.from_numpy(views)).item() == pytest.approx(ref_aug)
    assert neighbour_loss(zt, torch.from_numpy(nbs)).item() == pytest.approx(ref_nb)
    assert augmentation_loss(zt, torch.from_numpy(views[0])).item() == pytest.approx(
        np.mean([1 - cos(z[i], views[0, i]) for i in range(6)])
    )


def test_min_distance_loss_matches_loop() -> None:
    rng = np.random.default_rng(2)
    z, c = rng.standard_normal((7, 6)), make_pedcc(3, 6)
    ref = np.mean([1 - max(z[i] @ c[j] / np.linalg.norm(z[i]) for j in range(3)) for i in range(7)])
    got = min_distance_loss(torch.from_numpy(z), torch.from_numpy(c)).item()
    assert got == pytest.approx(ref)
    # zero exactly on the centroids
    assert min_distance_loss(torch.from_numpy(c), torch.from_numpy(c)).item() == pytest.approx(0.0)


def test_losses_follow_dtype_and_have_finite_gradients() -> None:
    rng = np.random.default_rng(3)
    z = torch.tensor(_unit(rng, 10, 8), dtype=torch.float64, requires_grad=True)
    c = torch.from_numpy(make_pedcc(4, 8)).float()  # float32 centroids follow z's dtype
    out = icbpl_objective(z, c, z_views=z.detach() + 0.1, z_neighbours=z.detach().flip(0))
    assert out["total"].dtype == torch.float64
    out["total"].backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    # identical points: euclidean distance keeps finite gradients
    a = torch.ones(3, 4, requires_grad=True)
    distance(a, a.detach(), "euclidean").sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


def test_objective_falls_under_gradient_steps() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    head = torch.nn.Linear(16, 8)
    c = torch.from_numpy(make_pedcc(4, 8)).float()
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)

    def total() -> torch.Tensor:
        z = torch.nn.functional.normalize(head(x), dim=1)
        zv = torch.nn.functional.normalize(head(x + 0.05 * torch.randn_like(x)), dim=1)
        return icbpl_objective(z, c, z_views=zv, z_neighbours=z.roll(1, 0))["total"]

    start = total().item()
    for _ in range(30):
        opt.zero_grad()
        loss = total()
        loss.backward()
        opt.step()
    assert total().item() < 0.7 * start


def test_zero_weights_skip_losses() -> None:
    z = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    c = torch.from_numpy(make_pedcc(2, 4)).float()
    out = icbpl_objective(z, c, weights=LossWeights(0.0, 0.0, 0.0, 1.0))
    assert out["mmd"].item() == 0.0
    assert out["total"].item() == pytest.approx(out["min_distance"].item())


def _mmd_five_exponentials(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The formula term by term (one exp per bandwidth), as the authors' code writes it."""
    n = z.shape[0]
    target = c.repeat(-(-n // c.shape[0]), 1)[:n]
    total = torch.cat([z, target])
    dist2 = ((total[:, None, :] - total[None, :, :]) ** 2).sum(-1)
    m = total.shape[0]
    b = dist2.detach().sum() / (m * m - m) / 4.0
    k = sum(torch.exp(-dist2 / (b * 2.0**i)) for i in range(5))
    assert isinstance(k, torch.Tensor)
    return (k[:n, :n] + k[n:, n:] - k[:n, n:] - k[n:, :n]).mean()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mmd_squaring_matches_five_exponentials(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(4)
    z = torch.nn.functional.normalize(torch.randn(35, 6, generator=gen, dtype=dtype), dim=1)
    c = torch.from_numpy(make_pedcc(5, 6)).to(dtype)
    z.requires_grad_(True)
    got = mmd_loss(z, c)
    (g_got,) = torch.autograd.grad(got, z)
    ref = _mmd_five_exponentials(z, c)
    (g_ref,) = torch.autograd.grad(ref, z)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert got.item() == pytest.approx(ref.item(), rel=tol, abs=tol)
    torch.testing.assert_close(g_got, g_ref, rtol=tol * 10, atol=tol)
    # another kernel_mul takes the general path and agrees with its own reference
    other = mmd_loss(z, c, kernel_mul=3.0, kernel_num=3)
    assert torch.isfinite(other) and other.item() != pytest.approx(got.item())
