"""Faithful Sinkhorn against a plain re-computation of the published formula."""

from __future__ import annotations

import pytest
import torch
from divtools import logits

from kdlab.divergences import get
from kdlab.errors import ConfigError


def published(z_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
    """SinKD's classification loss, written out term by term (T=2, L1, eps=0.1, 20 its)."""
    p_s = torch.softmax(z_s / 2, dim=1)
    p_t = torch.softmax(z_t / 2, dim=1)
    B = p_s.shape[0]
    W = torch.zeros(B, B, dtype=p_s.dtype)
    for i in range(B):
        for j in range(B):
            W[i, j] = (p_s[i] - p_t[j]).abs().sum()
    P = torch.exp(-W / 0.1)
    for _ in range(20):
        P = P / P.sum(dim=1, keepdim=True)
        P = P / P.sum(dim=0, keepdim=True)
    return 0.001 * (P * W).sum()


FAITHFUL = dict(mode="faithful", temperature=2.0, epsilon=0.1, p=1, n_iters=20, scale=0.001, reduction="sum")


@pytest.mark.parametrize("B,C", [(16, 2), (32, 3), (5, 7)])
def test_matches_published_formula(B: int, C: int) -> None:
    z_s, z_t = logits(B, C, seed=1), logits(B, C, seed=2)
    z_s.requires_grad_(True)
    div = get("sinkhorn", **FAITHFUL)
    out = div(z_s, z_t)
    ref = published(z_s, z_t)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    g_out = torch.autograd.grad(out, z_s)[0]
    z2 = z_s.detach().clone().requires_grad_(True)
    g_ref = torch.autograd.grad(published(z2, z_t), z2)[0]
    torch.testing.assert_close(g_out, g_ref, rtol=1e-8, atol=1e-12)


def test_defaults_are_published_constants() -> None:
    z_s, z_t = logits(8, 3, seed=3), logits(8, 3, seed=4)
    torch.testing.assert_close(get("sinkhorn", mode="faithful")(z_s, z_t), published(z_s, z_t))


def test_mean_reduction_divides_by_batch() -> None:
    z_s, z_t = logits(12, 3, seed=5), logits(12, 3, seed=6)
    s = get("sinkhorn", **FAITHFUL)(z_s, z_t)
    m = get("sinkhorn", **{**FAITHFUL, "reduction": "mean"})(z_s, z_t)
    torch.testing.assert_close(m * 12, s)


def test_not_zero_on_identical_inputs_as_published() -> None:
    z = logits(8, 3, seed=7)
    assert float(get("sinkhorn", **FAITHFUL)(z, z)) > 0


def test_single_logit_is_identically_zero() -> None:
    z_s, z_t = logits(8, 1, seed=8).requires_grad_(True), logits(8, 1, seed=9)
    out = get("sinkhorn", **FAITHFUL)(z_s, z_t)
    assert float(out.detach()) == 0.0
    out.backward()
    assert torch.all(z_s.grad == 0)


def test_teacher_detached_and_stats() -> None:
    z_s, z_t = logits(6, 3, seed=1).requires_grad_(True), logits(6, 3, seed=2).requires_grad_(True)
    div = get("sinkhorn", **FAITHFUL)
    div(z_s, z_t).backward()
    assert z_t.grad is None and z_s.grad is not None
    assert div.last_stats["iterations"] == 20 and div.last_stats["points"] == 6


def test_mask_drops_rows_whatever_they_contain() -> None:
    z_s, z_t = logits(10, 3, seed=1), logits(10, 3, seed=2)
    mask = torch.ones(10, dtype=torch.bool)
    mask[[2, 7]] = False
    junk_s, junk_t = z_s.clone(), z_t.clone()
    junk_s[~mask], junk_t[~mask] = float("nan"), 1e30
    div = get("sinkhorn", **FAITHFUL)
    torch.testing.assert_close(div(junk_s, junk_t, mask), published(z_s[mask], z_t[mask]))


def test_sequence_logits_use_tokens_as_points() -> None:
    z_s, z_t = logits(2, 4, 5, seed=1), logits(2, 4, 5, seed=2)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    out = get("sinkhorn", **FAITHFUL)(z_s, z_t, mask)
    torch.testing.assert_close(out, published(z_s[mask], z_t[mask]))


def test_bf16_autocast_no_nan_and_fp32_inside() -> None:
    z_s = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, 0.0, 1e4]]).bfloat16().requires_grad_(True)
    z_t = -z_s.detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = get("sinkhorn", **FAITHFUL)(z_s, z_t)
    out.backward()
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert torch.isfinite(z_s.grad).all()


def test_gradcheck() -> None:
    z_s, z_t = logits(5, 3, seed=1).requires_grad_(True), logits(5, 3, seed=2)
    div = get("sinkhorn", **{**FAITHFUL, "scale": 1.0})
    assert torch.autograd.gradcheck(lambda s: div(s, z_t), (z_s,))


@pytest.mark.parametrize(
    "params",
    [
        dict(mode="faithful", temperature=-1.0),
        dict(mode="faithful", epsilon=0.0),
        dict(mode="faithful", n_iters=-2),
        dict(mode="faithful", reduction="max"),
        dict(mode="faithful", p=0.5),
        dict(mode="faithful", backend="dense"),  # a sound-only parameter
        dict(mode="exact"),
    ],
)
def test_bad_params(params: dict) -> None:
    with pytest.raises(ConfigError):
        get("sinkhorn", **params)
