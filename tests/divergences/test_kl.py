"""KD cross-entropy and forward KL: closed forms, SciPy, masks, gradients, precision."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from divtools import logits
from scipy.special import rel_entr

from kdlab.divergences import get
from kdlab.errors import ConfigError


def probs(z: torch.Tensor, T: float = 1.0) -> np.ndarray:
    return torch.softmax(z / T, dim=-1).numpy()


@pytest.mark.parametrize("T", [1.0, 2.5])
def test_kl_matches_scipy(T: float) -> None:
    z_s, z_t = logits(16, 3, seed=1), logits(16, 3, seed=2)
    ref = rel_entr(probs(z_t, T), probs(z_s, T)).sum(-1).mean()
    np.testing.assert_allclose(float(get("kl", temperature=T)(z_s, z_t)), ref, rtol=1e-10)


def test_kd_is_cross_entropy_and_kl_plus_entropy() -> None:
    z_s, z_t = logits(32, 3, seed=3), logits(32, 3, seed=4)
    p, q = probs(z_t, 2.0), probs(z_s, 2.0)
    ce = -(p * np.log(q)).sum(-1).mean()
    kd = float(get("kd", temperature=2.0)(z_s, z_t))
    np.testing.assert_allclose(kd, ce, rtol=1e-10)
    entropy = -(p * np.log(p)).sum(-1).mean()
    np.testing.assert_allclose(kd - entropy, float(get("kl", temperature=2.0)(z_s, z_t)), rtol=1e-9)


def test_closed_form_two_classes() -> None:
    # teacher p = (1/2, 1/2), student q = (e / (1 + e), 1 / (1 + e))
    z_t = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    z_s = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    q1 = math.e / (1 + math.e)
    expected = 0.5 * math.log(0.5 / q1) + 0.5 * math.log(0.5 / (1 - q1))
    assert math.isclose(float(get("kl")(z_s, z_t)), expected, rel_tol=1e-12)
    assert math.isclose(float(get("kd")(z_s, z_t)), expected + math.log(2), rel_tol=1e-12)


def test_t2_scales_by_temperature_squared() -> None:
    z_s, z_t = logits(8, 3, seed=5), logits(8, 3, seed=6)
    a = get("kd", temperature=3.0)(z_s, z_t)
    b = get("kd", temperature=3.0, t2=True)(z_s, z_t)
    torch.testing.assert_close(b, 9 * a)


def test_temperature_is_mutable() -> None:
    z_s, z_t = logits(8, 3, seed=5), logits(8, 3, seed=6)
    div = get("kl", temperature=4.0)
    div.temperature = 1.0
    torch.testing.assert_close(div(z_s, z_t), get("kl")(z_s, z_t))


@pytest.mark.parametrize("name", ["kd", "kl"])
def test_mask_invariance(name: str) -> None:
    z_s, z_t = logits(3, 5, 7, seed=1), logits(3, 5, 7, seed=2)
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) > 0.4
    junk_s, junk_t = z_s.clone(), z_t.clone()
    junk_s[~mask], junk_t[~mask] = float("nan"), float("inf")
    div = get(name)
    ref = div(z_s[mask], z_t[mask])
    torch.testing.assert_close(div(junk_s, junk_t, mask), ref)
    js = junk_s.clone().requires_grad_(True)
    div(js, junk_t, mask).backward()
    assert torch.isfinite(js.grad).all() and torch.all(js.grad[~mask] == 0)


@pytest.mark.parametrize("name", ["kd", "kl"])
def test_gradcheck_and_teacher_detached(name: str) -> None:
    z_s, z_t = logits(4, 5, seed=1).requires_grad_(True), logits(4, 5, seed=2).requires_grad_(True)
    div = get(name, temperature=1.7)
    assert torch.autograd.gradcheck(lambda s: div(s, z_t.detach()), (z_s,))
    div(z_s, z_t).backward()
    assert z_t.grad is None


@pytest.mark.parametrize("name", ["kd", "kl"])
def test_bf16_adversarial(name: str) -> None:
    big = torch.tensor([[3e4, -3e4, 0.0], [0.0, 0.0, 0.0], [-3e4, 3e4, 1.0]])
    z_s = big.bfloat16().requires_grad_(True)
    z_t = big.flip(-1).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = get(name)(z_s, z_t)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z_s.grad).all()


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        get("kl", temperature=-1.0)
    with pytest.raises(ConfigError, match="reduction"):
        get("kl", reduction="median")
    with pytest.raises(ConfigError, match="Valid parameters"):
        get("kl", temprature=2.0)
    with pytest.raises(ValueError, match="same shape"):
        get("kl")(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="mask"):
        get("kl")(torch.zeros(4, 3), torch.zeros(4, 3), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="probabilities"):
        p = torch.softmax(torch.randn(4, 3), -1)
        get("kl", check_inputs=True)(p, p)
