"""Sound Sinkhorn against POT and GeomLoss; properties, gradients, backends."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
from divtools import logits
from geomloss import SamplesLoss

from kdlab.divergences import get
from kdlab.divergences import ot as kot
from kdlab.errors import ConfigError

TIGHT = dict(mode="sound", temperature=1.0, epsilon=0.1, tol=1e-12, max_iter=5000, backend="dense")


def points(z: torch.Tensor) -> np.ndarray:
    return torch.softmax(z, -1).numpy()


@pytest.mark.parametrize("cost,metric", [("l1", "cityblock"), ("sqeuclidean", "sqeuclidean"), ("euclidean", "euclidean")])
def test_entropic_ot_matches_pot(cost: str, metric: str) -> None:
    z_s, z_t = logits(40, 4, seed=1), logits(40, 4, seed=2)
    div = get("sinkhorn", debias=False, cost=cost, **TIGHT)
    value = float(div(z_s, z_t))
    x, y = points(z_s), points(z_t)
    M = ot.dist(x, y, metric=metric) / (2 if cost == "sqeuclidean" else 1)
    a = np.full(40, 1 / 40)
    P = ot.sinkhorn(a, a, M, 0.1, numItermax=100000, stopThr=1e-14)
    entropic = (P * M).sum() + 0.1 * (P * np.log(P / np.outer(a, a))).sum()
    assert value == pytest.approx(entropic, rel=1e-9)
    assert float(div.last_stats["transport_cost"]) == pytest.approx(
        ot.sinkhorn2(a, a, M, 0.1, numItermax=100000, stopThr=1e-14), rel=1e-8)
    assert div.last_stats["converged"]


# GeomLoss anneals epsilon down to blur^p and stops there: a scaling close to 1 gets close
# to convergence (the Euclidean cost needs more steps)
@pytest.mark.parametrize("cost,p,scaling", [("sqeuclidean", 2, 0.99), ("euclidean", 1, 0.998)])
def test_debiased_value_and_gradient_match_geomloss(cost: str, p: int, scaling: float) -> None:
    z_s, z_t = logits(64, 5, seed=3).requires_grad_(True), logits(64, 5, seed=4)
    div = get("sinkhorn", cost=cost, **TIGHT)
    value = div(z_s, z_t)
    (g,) = torch.autograd.grad(value, z_s)
    zs2 = z_s.detach().clone().requires_grad_(True)
    x, y = torch.softmax(zs2, -1), torch.softmax(z_t, -1)
    ref = SamplesLoss("sinkhorn", p=p, blur=0.1 ** (1 / p), scaling=scaling, backend="tensorized")(x, y)
    (g_ref,) = torch.autograd.grad(ref, zs2)
    assert float(value.detach()) == pytest.approx(float(ref.detach()), rel=1e-3)
    cos = torch.nn.functional.cosine_similarity(g.flatten(), g_ref.flatten(), dim=0)
    assert float(cos) > 0.999


@pytest.mark.parametrize("cost,metric", [("l1", "cityblock"), ("euclidean", "euclidean")])
def test_debiased_matches_three_pot_problems(cost: str, metric: str) -> None:
    z_s, z_t = logits(30, 4, seed=21), logits(30, 4, seed=22)
    value = float(get("sinkhorn", cost=cost, **TIGHT)(z_s, z_t))
    x, y = points(z_s), points(z_t)
    a = np.full(30, 1 / 30)

    def entropic(u: np.ndarray, v: np.ndarray) -> float:
        M = ot.dist(u, v, metric=metric)
        P = ot.sinkhorn(a, a, M, 0.1, numItermax=100000, stopThr=1e-13)
        return (P * M).sum() + 0.1 * (P * np.log(P / np.outer(a, a))).sum()

    expected = entropic(x, y) - entropic(x, x) / 2 - entropic(y, y) / 2
    assert value == pytest.approx(expected, rel=1e-8)


def test_zero_iff_sets_coincide_and_non_negative() -> None:
    div = get("sinkhorn", **TIGHT)
    z = logits(30, 4, seed=5)
    assert float(div(z, z.clone())) == pytest.approx(0.0, abs=1e-8)
    # a permutation of the same points is the same set: still zero
    assert float(div(z[torch.randperm(30)], z)) == pytest.approx(0.0, abs=1e-8)
    for seed in range(4):
        assert float(div(logits(30, 4, seed=seed), logits(30, 4, seed=seed + 50))) > 1e-6
    biased = get("sinkhorn", debias=False, **TIGHT)
    assert float(biased(z, z)) > 1e-3  # raw OT_eps is not a divergence


def test_envelope_gradient_matches_unrolled() -> None:
    z_s, z_t = logits(48, 3, seed=6), logits(48, 3, seed=7)
    grads = []
    for gradient in ("envelope", "unrolled"):
        zs = z_s.clone().requires_grad_(True)
        get("sinkhorn", gradient=gradient, **TIGHT)(zs, z_t).backward()
        grads.append(zs.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("gradient", ["envelope", "unrolled"])
def test_gradcheck_float64(gradient: str) -> None:
    z_s, z_t = logits(6, 3, seed=8).requires_grad_(True), logits(6, 3, seed=9)
    div = get("sinkhorn", gradient=gradient, **TIGHT)
    assert torch.autograd.gradcheck(lambda s: div(s, z_t), (z_s,))


def test_lse_path_matches_kernel_path() -> None:
    # eps = 0.05 puts max C / eps above the kernel threshold: log-sum-exp updates; POT's
    # plain-domain solver is still exact here in float64 (exp(-40) is representable)
    z_s, z_t = logits(20, 3, seed=10), logits(20, 3, seed=11)
    x, y = torch.softmax(z_s, -1), torch.softmax(z_t, -1)
    C = kot.cost_matrix(x, y, "l1")
    assert float(C.max()) / 0.05 > kot.PLAIN_KERNEL_MAX
    f, g, _, _ = kot.solve(C, 0.05, 100000, 1e-13, symmetric=False)
    a = np.full(20, 1 / 20)
    P = ot.sinkhorn(a, a, C.numpy(), 0.05, numItermax=100000, stopThr=1e-15)
    P_ours = torch.exp((f[:, None] + g[None, :] - C) / 0.05) / 400
    np.testing.assert_allclose(P_ours.numpy(), P, atol=1e-11)


def test_tolerance_stops_early_and_max_iter_caps() -> None:
    z_s, z_t = logits(32, 3, seed=12), logits(32, 3, seed=13)
    loose = get("sinkhorn", mode="sound", tol=1e-2, max_iter=500, backend="dense")
    loose(z_s, z_t)
    tight = get("sinkhorn", mode="sound", tol=1e-9, max_iter=500, backend="dense")
    tight(z_s, z_t)
    assert loose.last_stats["iterations"] < tight.last_stats["iterations"] < 500
    capped = get("sinkhorn", mode="sound", tol=0.0, max_iter=3, backend="dense")
    capped(z_s, z_t)
    assert capped.last_stats["iterations"] == 3 and not capped.last_stats["converged"]


def test_tokens_as_points_with_mask() -> None:
    z_s, z_t = logits(3, 5, 6, seed=14), logits(3, 5, 6, seed=15)
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(2)) > 0.3
    div = get("sinkhorn", **TIGHT)
    ref = div(z_s[mask], z_t[mask])
    junk_s, junk_t = z_s.clone(), z_t.clone()
    junk_s[~mask], junk_t[~mask] = float("nan"), 1e30
    js = junk_s.requires_grad_(True)
    out = div(js, junk_t, mask)
    torch.testing.assert_close(out, ref)
    out.backward()
    assert torch.isfinite(js.grad).all() and torch.all(js.grad[~mask] == 0)
    assert div.last_stats["points"] == int(mask.sum())


def test_single_class_is_zero() -> None:
    out = get("sinkhorn")(logits(8, 1, seed=1), logits(8, 1, seed=2))
    assert float(out) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_autocast_adversarial(dtype: torch.dtype) -> None:
    s = torch.tensor([[6e4, -6e4, 0.0], [0.0, 0.0, 0.0], [30.0, 0.0, 0.0], [-6e4, 6e4, 1.0]])
    z_s = s.to(dtype).requires_grad_(True)
    for eps in (0.1, 1e-3):  # 1e-3: log-sum-exp path (kernel would underflow)
        with torch.autocast("cpu", dtype=dtype):
            out = get("sinkhorn", epsilon=eps)(z_s, s.flip(-1).to(dtype))
        (g,) = torch.autograd.grad(out, z_s)
        assert out.dtype == torch.float32 and torch.isfinite(out) and torch.isfinite(g).all()


def test_scale_t2_and_mutable_temperature() -> None:
    z_s, z_t = logits(16, 3, seed=16), logits(16, 3, seed=17)
    base = get("sinkhorn", temperature=2.0)(z_s, z_t)
    torch.testing.assert_close(get("sinkhorn", temperature=2.0, scale=3.0, t2=True)(z_s, z_t), 12 * base)
    div = get("sinkhorn", temperature=5.0)
    div.temperature = 2.0
    torch.testing.assert_close(div(z_s, z_t), base)


@pytest.mark.parametrize(
    "params,key",
    [
        (dict(gradient="unrolled", backend="tensorized"), "unrolled"),
        (dict(scaling=1.0), "scaling"),
        (dict(tol=-1.0), "tol"),
        (dict(max_iter=0), "max_iter"),
        (dict(cost="cosine"), "cost"),
        (dict(backend="gpu"), "backend"),
        (dict(n_iters=10), "n_iters"),  # a faithful-only parameter
        (dict(epsilon=-0.1), "epsilon"),
    ],
)
def test_bad_sound_params(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        get("sinkhorn", mode="sound", **params)


@pytest.mark.slow
@pytest.mark.parametrize("cost", ["l1", "sqeuclidean"])
def test_keops_online_matches_dense(cost: str) -> None:
    """Compiles KeOps kernels with g++ on first use (cached afterwards)."""
    z_s, z_t = logits(200, 4, seed=20), logits(200, 4, seed=21)
    grads, values = [], []
    for backend in ("dense", "online"):
        zs = z_s.float().clone().requires_grad_(True)
        div = get("sinkhorn", backend=backend, cost=cost, scaling=0.99, tol=1e-7, max_iter=2000)
        out = div(zs, z_t.float())
        out.backward()
        assert div.last_stats["backend"] == backend
        values.append(float(out.detach()))
        grads.append(zs.grad.flatten())
    assert values[1] == pytest.approx(values[0], rel=1e-3)
    assert float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)) > 0.99
    assert math.isfinite(values[1])
