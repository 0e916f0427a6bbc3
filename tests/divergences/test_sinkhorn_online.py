"""The online PyTorch Sinkhorn (row blocks, no N x M matrix) against the dense solver."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from divtools import logits

from kdlab.divergences import costs as kcosts
from kdlab.divergences import get, ot_online
from kdlab.errors import ConfigError

TIGHT = dict(mode="sound", temperature=1.0, epsilon=0.1, tol=1e-12, max_iter=5000)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few rows, so every pass crosses block boundaries; record the largest block."""
    monkeypatch.setattr(ot_online, "BLOCK_ELEMENTS", 64)
    largest = []
    blocks = ot_online._blocks

    def recording(x, y, cost):
        for rows, C in blocks(x, y, cost):
            largest.append(C.numel())
            yield rows, C

    monkeypatch.setattr(ot_online, "_blocks", recording)
    return largest


def value_and_grad(params: dict, z_s: torch.Tensor, z_t: torch.Tensor):
    zs = z_s.clone().requires_grad_(True)
    div = get("sinkhorn", **params)
    out = div.transport(torch.softmax(zs, -1), torch.softmax(z_t, -1))  # N student, M teacher points
    (g,) = torch.autograd.grad(out, zs)
    return out.detach(), g, div.last_stats


@pytest.mark.parametrize("cost", ["l1", "euclidean", "sqeuclidean"])
@pytest.mark.parametrize("debias", [True, False])
def test_online_matches_dense_values_and_gradients(small_blocks, cost: str, debias: bool) -> None:
    z_s, z_t = logits(23, 4, seed=1), logits(17, 4, seed=2)  # N != M
    params = dict(TIGHT, cost=cost, debias=debias)
    v_d, g_d, s_d = value_and_grad(dict(params, backend="dense"), z_s, z_t)
    v_o, g_o, s_o = value_and_grad(dict(params, backend="online_torch"), z_s, z_t)
    assert s_o["backend"] == "online_torch" and s_d["backend"] == "dense"
    assert max(small_blocks) <= 64  # never more than one block of costs at a time
    torch.testing.assert_close(v_o, v_d, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_o, g_d, rtol=1e-8, atol=1e-12)
    assert float(s_o["transport_cost"]) == pytest.approx(float(s_d["transport_cost"]), rel=1e-10)
    assert float(s_o["marginal_error"]) == pytest.approx(float(s_d["marginal_error"]), abs=1e-12)
    assert s_o["iterations"] == s_d["iterations"] or s_o["converged"]


def test_online_matches_dense_in_log_domain_regime(small_blocks) -> None:
    # eps = 0.02: max C / eps > 30, the dense solver takes its log-sum-exp path too
    z_s, z_t = logits(20, 3, seed=3), logits(20, 3, seed=4)
    params = dict(TIGHT, epsilon=0.02)
    v_d, g_d, _ = value_and_grad(dict(params, backend="dense"), z_s, z_t)
    v_o, g_o, _ = value_and_grad(dict(params, backend="online_torch"), z_s, z_t)
    torch.testing.assert_close(v_o, v_d, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g_o, g_d, rtol=1e-7, atol=1e-11)


@pytest.mark.parametrize("cost", ["l1", "euclidean", "sqeuclidean"])
def test_kernel_product_equals_log_sum_exp(small_blocks, cost: str) -> None:
    x, y = torch.softmax(logits(9, 4, seed=1), -1), torch.softmax(logits(11, 4, seed=2), -1)
    h = logits(11, seed=3, scale=40.0)  # widely spread potentials: exp(h) alone would overflow
    assert ot_online.cost_bound(x, y, cost) / 0.1 <= 30
    plain = ot_online.softmin_online(0.1, x, y, h, cost, plain=True)
    torch.testing.assert_close(plain, ot_online.softmin_online(0.1, x, y, h, cost, plain=False), rtol=1e-12, atol=1e-12)
    C = kcosts.cost_matrix(x, y, cost)
    assert float(C.max()) <= ot_online.cost_bound(x, y, cost)


def test_online_gradcheck_float64(small_blocks) -> None:
    z_s, z_t = logits(6, 3, seed=8).requires_grad_(True), logits(7, 3, seed=9)
    div = get("sinkhorn", backend="online_torch", **TIGHT)
    y = torch.softmax(z_t, -1)
    assert torch.autograd.gradcheck(lambda s: div.transport(torch.softmax(s, -1), y), (z_s,))


def test_online_float32_close_to_dense() -> None:
    z_s, z_t = logits(64, 5, seed=5, dtype=torch.float32), logits(64, 5, seed=6, dtype=torch.float32)
    params = dict(mode="sound", temperature=2.0)
    v_d, g_d, _ = value_and_grad(dict(params, backend="dense"), z_s, z_t)
    v_o, g_o, _ = value_and_grad(dict(params, backend="online_torch"), z_s, z_t)
    torch.testing.assert_close(v_o, v_d, rtol=1e-4, atol=1e-6)
    assert float(torch.nn.functional.cosine_similarity(g_o.flatten(), g_d.flatten(), dim=0)) > 0.9999


def test_online_refuses_unrolled() -> None:
    with pytest.raises(ConfigError, match="unrolled"):
        get("sinkhorn", backend="online_torch", gradient="unrolled")


@pytest.mark.slow
def test_forty_thousand_points_under_6gb_address_space() -> None:
    """N = M = 40,000 points in 3 dimensions under ``ulimit -v 6 GB``, single-threaded.

    Measured once: see docs/benchmarks.md (minutes on one core).
    """
    script = textwrap.dedent("""
        import resource, torch
        from kdlab.divergences import get
        g = torch.Generator().manual_seed(0)
        z_s = (torch.randn(40000, 3, generator=g) * 2).requires_grad_(True)
        z_t = torch.randn(40000, 3, generator=g) * 2
        div = get("sinkhorn", backend="online_torch")
        out = div(z_s, z_t)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(z_s.grad).all() and div.last_stats["converged"]
        print("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = f"ulimit -v {6 * 2**20} && exec {sys.executable} -c '{script}'"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(["bash", "-c", cmd], env=env, cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "peak_rss_mb" in proc.stdout
