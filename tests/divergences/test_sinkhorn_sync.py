"""Sound Sinkhorn decides convergence on the device: reading the flag every few iterations
gives exactly the result of a per-iteration stop, with a read every ``CHECK_EVERY``
iterations at most, none at ``tol=0``; faithful mode reads nothing."""

from __future__ import annotations

import pytest
import torch
from divtools import logits

from kdlab.divergences import get
from kdlab.divergences import ot as kot
from tests.synctools import syncs


def run(params: dict, z_s: torch.Tensor, z_t: torch.Tensor):
    zs = z_s.clone().requires_grad_(True)
    div = get("sinkhorn", **params)
    out = div(zs, z_t)
    (g,) = torch.autograd.grad(out, zs)
    return out.detach(), g, {k: v for k, v in div.last_stats.items() if k != "backend"}


@pytest.mark.parametrize("epsilon", [0.1, 0.01])  # exp(-C / eps) representable, and log-domain updates
@pytest.mark.parametrize("gradient, backend", [("envelope", "dense"), ("unrolled", "dense"),
                                               ("envelope", "online_torch")])
@pytest.mark.parametrize("debias", [True, False])
def test_reading_the_flag_every_few_iterations_gives_the_per_iteration_stop(monkeypatch, epsilon, gradient,
                                                                           backend, debias):
    z_s, z_t = logits(12, 4, seed=3), logits(12, 4, seed=4)  # float64
    params = dict(mode="sound", epsilon=epsilon, tol=1e-7, max_iter=3000, gradient=gradient, backend=backend,
                  debias=debias)
    v, g, stats = run(params, z_s, z_t)
    assert int(stats["iterations"]) % kot.CHECK_EVERY != 0  # the default reads past convergence here
    monkeypatch.setattr(kot, "CHECK_EVERY", 1)  # the flag read after every iteration
    v_1, g_1, stats_1 = run(params, z_s, z_t)
    torch.testing.assert_close(v, v_1, rtol=0, atol=0)
    torch.testing.assert_close(g, g_1, rtol=0, atol=0)
    for k in stats:
        torch.testing.assert_close(torch.as_tensor(stats[k]), torch.as_tensor(stats_1[k]), rtol=0, atol=0)


def test_a_tolerance_reads_the_flag_every_few_iterations_and_tol_zero_never():
    z_s, z_t = logits(16, 3, seed=5).requires_grad_(True), logits(16, 3, seed=6)
    div = get("sinkhorn", mode="sound", tol=1e-6, max_iter=500, backend="dense")
    seen = syncs(lambda: div(z_s, z_t).backward())
    # three problems (x-y, then x-x and y-y to debias), each read every CHECK_EVERY iterations
    assert seen and all(s.where.endswith("(iterate)") for s in seen)
    assert len(seen) <= int(div.last_stats["iterations"]) // kot.CHECK_EVERY + 2 * 3
    fixed = get("sinkhorn", mode="sound", tol=0.0, max_iter=40, backend="dense")
    assert syncs(lambda: fixed(z_s, z_t).backward()) == []
    assert int(fixed.last_stats["iterations"]) == 40


def test_large_problems_read_the_flag_every_iteration(monkeypatch):
    """Past CHECK_EVERY_MAX_COSTS an iteration costs more than a read: no frozen iterations."""
    z_s, z_t = logits(16, 3, seed=5).requires_grad_(True), logits(16, 3, seed=6)
    div = get("sinkhorn", mode="sound", tol=1e-6, max_iter=500, backend="dense", debias=False)
    monkeypatch.setattr(kot, "CHECK_EVERY_MAX_COSTS", 16 * 16 - 1)
    seen = syncs(lambda: div(z_s, z_t))
    assert len(seen) == int(div.last_stats["iterations"])  # one read per iteration, the last one converged


def test_faithful_mode_and_its_diagnostics_read_nothing():
    z_s, z_t = logits(16, 3, seed=7).requires_grad_(True), logits(16, 3, seed=8)
    div = get("sinkhorn", mode="faithful")
    assert syncs(lambda: div(z_s, z_t).backward()) == []
    assert float(div.last_stats["transport_cost"]) > 0
