"""Memory-bounded L_p costs: torch.cdist's values and gradients, a chunked backward."""

from __future__ import annotations

import math

import pytest
import torch
from divtools import logits
from torch.utils._python_dispatch import TorchDispatchMode

from kdlab.divergences import costs, get
from kdlab.divergences import sinkhorn as ksink
from kdlab.errors import ConfigError, ResourceError

PS = [1.0, 1.5, 2.0, 3.0, math.inf]


@pytest.fixture
def tiny_chunks(monkeypatch):
    monkeypatch.setattr(costs, "CHUNK_ELEMENTS", 40)  # a few rows per chunk
    monkeypatch.setattr(costs, "CHUNKED_ON_CPU", True)  # the backward CUDA runs, here on the CPU


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation creates."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def grads(fn, x: torch.Tensor, y: torch.Tensor, G: torch.Tensor):
    x, y = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    W = fn(x, y)
    gx, gy = torch.autograd.grad(W, (x, y), G)
    return W.detach(), gx, gy


@pytest.mark.parametrize("p", PS)
def test_values_and_gradients_equal_cdist(tiny_chunks, p: float) -> None:
    x, y = logits(9, 5, seed=1), logits(7, 5, seed=2)
    G = logits(9, 7, seed=3)
    ours = grads(lambda a, b: costs.lp_distance(a, b, p), x, y, G)
    ref = grads(lambda a, b: torch.cdist(a[None], b[None], p=p)[0], x, y, G)
    for o, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(o, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_gradients_equal_a_float64_broadcast_reference(tiny_chunks, p: float) -> None:
    x, y = logits(6, 4, seed=4), logits(8, 4, seed=5)
    G = logits(6, 8, seed=6)
    ours = grads(lambda a, b: costs.lp_distance(a, b, p), x, y, G)
    ref = grads(lambda a, b: (a[:, None] - b[None]).abs().pow(p).sum(-1).pow(1 / p), x, y, G)
    for o, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_gradcheck_float64(tiny_chunks, p: float) -> None:
    x, y = logits(4, 3, seed=7).requires_grad_(True), logits(5, 3, seed=8).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: costs.lp_distance(a, b, p), (x, y))


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_coincident_points_have_zero_gradient(tiny_chunks, p: float) -> None:
    x = logits(3, 4, seed=9)
    _, gx, gy = grads(lambda a, b: costs.lp_distance(a, b, p), x, x.clone(), torch.eye(3, dtype=x.dtype))
    assert torch.isfinite(gx).all() and torch.all(gx == 0) and torch.all(gy == 0)


def test_backward_never_builds_an_n_by_m_by_d_tensor(tiny_chunks) -> None:
    N, M, D = 30, 20, 16
    x = logits(N, D, seed=10).requires_grad_(True)
    W = costs.lp_distance(x, logits(M, D, seed=11), 1.0)
    with LargestTensor() as mode:
        W.backward(torch.ones_like(W))
    assert mode.largest <= max(N * M, N * D, costs.CHUNK_ELEMENTS) < N * M * D


def test_cpu_keeps_the_native_backward_unless_asked(monkeypatch) -> None:
    x = logits(4, 3).requires_grad_(True)
    assert "LpDistance" not in type(costs.lp_distance(x, logits(5, 3), 1.0).grad_fn).__name__
    monkeypatch.setattr(costs, "CHUNKED_ON_CPU", True)
    assert "LpDistance" in type(costs.lp_distance(x, logits(5, 3), 1.0).grad_fn).__name__


FAITHFUL = dict(mode="faithful", temperature=2.0, scale=1.0)


def old_faithful(x: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    """The faithful computation with torch.cdist's own backward (the former implementation)."""
    W = torch.cdist(x.unsqueeze(0), y.unsqueeze(0), p=p).squeeze(0)
    P = torch.exp(-W / 0.1)
    for _ in range(20):
        P = P / P.sum(dim=1, keepdim=True)
        P = P / P.sum(dim=0, keepdim=True)
    return (P * W).sum()


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_faithful_equals_the_cdist_implementation(tiny_chunks, p: float) -> None:
    z_s, z_t = logits(12, 6, seed=12), logits(12, 6, seed=13)
    outs = []
    for fn in (lambda x, y: get("sinkhorn", p=p, **FAITHFUL).transport(x, y), lambda x, y: old_faithful(x, y, p)):
        zs = z_s.clone().requires_grad_(True)
        out = fn(torch.softmax(zs / 2, -1), torch.softmax(z_t / 2, -1))
        outs.append((out.detach(), torch.autograd.grad(out, zs)[0]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-10, atol=1e-14)


def test_faithful_refuses_a_problem_over_the_memory_limit() -> None:
    z = logits(64, 5, seed=14)
    need = ksink.faithful_memory_bytes(64, 64, 5, 20, 8)
    assert need == 8 * ((2 * 20 + ksink.FAITHFUL_MATRICES_FIXED) * 64 * 64 + 2 * 128 * 5 + 4 * 64 * 64 * 5)
    fits = get("sinkhorn", memory_limit_gb=1.01 * need / 2**30, **FAITHFUL)
    assert torch.isfinite(fits(z, z))
    too_small = get("sinkhorn", memory_limit_gb=0.99 * need / 2**30, **FAITHFUL)
    with pytest.raises(ResourceError, match=r"needs about 0\.0 GB .* over the 0\.0 GB limit \(memory_limit_gb\)"):
        too_small(z, z)


def test_faithful_default_limit_is_the_device_memory(monkeypatch) -> None:
    monkeypatch.setattr(ksink, "device_memory_bytes", lambda device: 2**30)
    assert ksink.faithful_memory_bytes(4096, 4096, 1000, 20) > 2**30  # about 3.6 GB in float32
    with pytest.raises(ResourceError, match="needs about 3.6 GB .* 1.0 GB limit"):
        get("sinkhorn", mode="faithful").transport(torch.rand(4096, 1000), torch.rand(4096, 1000))
    with pytest.raises(ConfigError, match="memory_limit_gb"):
        get("sinkhorn", mode="sound", memory_limit_gb=1.0)
