"""The cheaper epoch's optimiser: fused Adam where torch has it, the same update as foreach."""

from __future__ import annotations

import torch

from icbpl.model.training import make_adam


def test_make_adam_is_fused_on_cpu_and_matches_foreach() -> None:
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(7, 5, generator=gen), torch.randn(5, generator=gen)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(5)]
    results = []
    for fused in (True, False):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        if fused:
            opt = make_adam(params, 1e-2, weight_decay=1e-3)
            assert opt.defaults["fused"] is True
        else:
            opt = torch.optim.Adam(params, lr=1e-2, weight_decay=1e-3, foreach=True)
        for step in grads:
            for p, g in zip(params, step, strict=True):
                p.grad = g.clone()
            opt.step()
        results.append([p.detach() for p in params])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert not torch.equal(results[0][0], start[0])
