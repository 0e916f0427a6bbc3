"""Block-wise computation (``kdlab.divergences.chunked``): every token-level member equals
the plain formula on the kept rows, whatever the block size, and the token cross-entropy
equals ``F.cross_entropy`` on the answer tokens."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from divtools import logits

from kdlab.divergences import chunked, get, names
from kdlab.divergences.base import LogitDivergence
from kdlab.families.tokens import token_cross_entropy
from kdlab.terms import Reads

PARAMS = {"js": {"beta": 0.3}, "alpha": {"alpha": -1.5}, "skew_kl": {"skew": 0.2},
          "skew_rkl": {"skew": 0.2}, "fdiv": {"generator": "js", "param": 0.4}}


def token_members():
    """Every registered divergence on the ``LogitDivergence`` path (the token level)."""
    out = []
    for name in names():
        div = get(name, **PARAMS.get(name, {}))
        if isinstance(div, LogitDivergence) and Reads.LABELS not in div.reads:
            out.append(name)
    return out


def test_the_token_path_covers_the_kl_family() -> None:
    assert {"kl", "rkl", "tvd", "skew_kl", "skew_rkl", "js", "hellinger", "akl", "kd", "fdiv"} <= set(token_members())


def sequence_inputs(B: int = 3, L: int = 9, V: int = 11, seed: int = 0):
    """``[B, L, V]`` float64 logits with masked positions holding garbage (NaN, -inf) and
    some classes ``-inf`` in both inputs; the mask ``[B, L]``."""
    z_s, z_t = logits(B, L, V, seed=seed, scale=3.0), logits(B, L, V, seed=seed + 1, scale=3.0)
    g = torch.Generator().manual_seed(seed + 2)
    mask = torch.rand(B, L, generator=g) > 0.3
    gone = torch.rand(B, L, V, generator=g) < 0.15
    z_s, z_t = z_s.masked_fill(gone, -math.inf), z_t.masked_fill(gone, -math.inf)
    z_s[~mask], z_t[~mask] = math.nan, -math.inf
    return z_s, z_t, mask


def reference(div: LogitDivergence, z_s: torch.Tensor, z_t: torch.Tensor, mask: torch.Tensor):
    """Autograd through the plain formula on the kept rows (selected, as before blocks)."""
    zs = z_s.clone().requires_grad_(True)
    T = div.temperature
    s, t = chunked.finite_logits(zs[mask], T), chunked.finite_logits(z_t[mask], T)
    out = div.pointwise(*div.prepare(s, t)).mean()
    (g,) = torch.autograd.grad(out, zs)
    return out.detach(), g


def blocked(div: LogitDivergence, z_s: torch.Tensor, z_t: torch.Tensor, mask: torch.Tensor):
    zs = z_s.clone().requires_grad_(True)
    out = div(zs, z_t, mask)
    (g,) = torch.autograd.grad(out, zs)
    with torch.no_grad():
        torch.testing.assert_close(div(z_s, z_t, mask), out.detach())
    return out.detach(), g


@pytest.mark.parametrize("name", token_members())
@pytest.mark.parametrize("rows", [1, 4], ids=["block1", "block4"])
def test_every_member_equals_the_plain_formula_on_kept_rows(monkeypatch, name: str, rows: int) -> None:
    """27 positions in blocks of 1, 4 (27 is not a multiple) or all at once: the same
    value and gradient as the plain formula on the kept rows; masked rows get exact 0."""
    z_s, z_t, mask = sequence_inputs()
    monkeypatch.setattr(chunked, "BLOCK", rows * z_s.shape[-1])
    div = get(name, temperature=1.7, **PARAMS.get(name, {}))
    value, grad = blocked(div, z_s, z_t, mask)
    ref_value, ref_grad = reference(div, z_s, z_t, mask)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)
    assert (grad[~mask] == 0).all()


@pytest.mark.parametrize("name", ["kl", "js", "akl", "fdiv"])
def test_half_precision_gradient_keeps_the_logits_dtype(name: str) -> None:
    z_s, z_t, mask = sequence_inputs(seed=4)
    z_s, z_t = z_s.nan_to_num(0.0, neginf=-30.0), z_t.nan_to_num(0.0, neginf=-30.0)
    div = get(name)
    zs = z_s.bfloat16().requires_grad_(True)
    out = div(zs, z_t.bfloat16(), mask)
    out.backward()
    assert out.dtype == torch.float32 and zs.grad.dtype == torch.bfloat16
    ref_value, ref_grad = reference(div, z_s.bfloat16().double(), z_t.bfloat16().double(), mask)
    torch.testing.assert_close(out.double(), ref_value, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(zs.grad.double(), ref_grad, rtol=2e-2, atol=1e-5)


def test_infinite_rows_stay_infinite_in_every_block(monkeypatch) -> None:
    """A truly infinite row (reverse KL, a class the teacher masks and the student does
    not) is +inf whichever block it falls in; the rows around it stay finite."""
    monkeypatch.setattr(chunked, "BLOCK", 2 * 5)
    z_s, z_t = logits(7, 5, seed=1), logits(7, 5, seed=2)
    z_t[4, 1] = -math.inf
    with torch.no_grad():
        values = chunked.position_values(get("rkl"), z_s, z_t)
    assert values[4].item() == math.inf and torch.isfinite(values[torch.arange(7) != 4]).all()


@pytest.mark.parametrize("rows", [1, 3, 1000])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_token_cross_entropy_equals_cross_entropy_on_answer_tokens(monkeypatch, rows: int, dtype) -> None:
    monkeypatch.setattr(chunked, "BLOCK", rows * 13)
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(4, 5, 13, generator=g, dtype=torch.float64) * 3).to(dtype)
    targets = torch.randint(0, 13, (4, 5), generator=g)
    mask = torch.rand(4, 5, generator=g) > 0.4
    z[~mask], targets[~mask] = math.nan, -100  # padding: garbage logits, ignore-index targets
    a, b = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    value = token_cross_entropy(a, targets, mask)
    value.backward()
    ref = F.cross_entropy(b[mask].double(), targets[mask])
    ref.backward()
    assert value.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    tol = {} if dtype == torch.float64 else {"rtol": 1e-2, "atol": 1e-3}
    torch.testing.assert_close(value.double(), ref, **tol)
    torch.testing.assert_close(a.grad.double(), b.grad.double(), **tol)
    assert (a.grad[~mask] == 0).all()


def test_token_cross_entropy_of_no_answer_token_is_zero_with_a_gradient() -> None:
    z = torch.randn(2, 3, 5, requires_grad=True)
    value = token_cross_entropy(z, torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.bool))
    value.backward()
    assert value.item() == 0.0 and (z.grad == 0).all()
