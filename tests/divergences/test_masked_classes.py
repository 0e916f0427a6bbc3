"""``-inf`` logits (vocabulary masking): a class masked in both inputs counts as removed.

An external or cached teacher may hold ``-inf`` on classes it masks, and so may the
student. Such a class has probability exactly 0, so every ``0 * log 0`` it produces must
count as 0: the value and the gradient equal those computed with the class removed.
"""

from __future__ import annotations

import math

import pytest
import torch
from divtools import logits

from kdlab.divergences import get

CASES = {
    "kd": {}, "kl": {}, "rkl": {}, "skl": {}, "js": {"beta": 0.3}, "skew_kl": {"skew": 0.1},
    "skew_rkl": {"skew": 0.1}, "pearson": {}, "neyman": {}, "alpha": {"alpha": 2.0},
    "akl": {}, "fdiv": {}, "tvd": {}, "hellinger": {}, "alpha_neg": {"alpha": -1.5},
}
IDS = list(CASES)


def build(case: str, **kw) -> torch.nn.Module:
    name = "alpha" if case == "alpha_neg" else case
    return get(name, **CASES[case], **kw)


def masked_pair(rows: int, classes: int, drop: int, seed: int):
    """Student and teacher logits ``[rows, classes]``, ``drop`` classes per row set to
    ``-inf`` in both, and the same logits with those classes removed ``[rows, classes - drop]``."""
    z_s, z_t = logits(rows, classes, seed=seed, scale=3.0), logits(rows, classes, seed=seed + 1, scale=3.0)
    g = torch.Generator().manual_seed(seed + 2)
    dropped = torch.rand(rows, classes, generator=g).argsort(-1)[:, :drop]
    gone = torch.zeros(rows, classes, dtype=torch.bool).scatter_(1, dropped, True)
    kept_s, kept_t = z_s[~gone].reshape(rows, -1), z_t[~gone].reshape(rows, -1)
    return z_s.masked_fill(gone, -math.inf), z_t.masked_fill(gone, -math.inf), kept_s, kept_t, gone


def value_and_grad(div: torch.nn.Module, z_s: torch.Tensor, z_t: torch.Tensor, mask=None):
    zs = z_s.clone().requires_grad_(True)
    out = div(zs, z_t, mask)
    (g,) = torch.autograd.grad(out, zs)
    return out.detach(), g


@pytest.mark.parametrize("case", IDS)
@pytest.mark.parametrize("T", [1.0, 2.0, 0.05])
def test_class_masked_in_both_counts_as_removed(case: str, T: float) -> None:
    z_s, z_t, kept_s, kept_t, gone = masked_pair(6, 7, 2, seed=1)
    div = build(case, temperature=T)
    value, grad = value_and_grad(div, z_s, z_t)
    ref_value, ref_grad = value_and_grad(div, kept_s, kept_t)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    torch.testing.assert_close(value, ref_value)
    torch.testing.assert_close(grad[~gone].reshape(ref_grad.shape), ref_grad)
    assert (grad[gone] == 0).all()
    with torch.no_grad():  # the path without autograd (evaluation, the fused members' plain call)
        torch.testing.assert_close(div(z_s, z_t), ref_value)


@pytest.mark.parametrize("case", IDS)
def test_token_level_masked_positions_and_classes(case: str) -> None:
    """[B, T, V] with padded positions (garbage, even NaN) and -inf vocabulary entries."""
    B, L, V = 3, 4, 9
    z_s, z_t, kept_s, kept_t, gone = masked_pair(B * L, V, 3, seed=5)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 3:] = False
    mask[2, 1:] = False
    z_s, z_t = z_s.reshape(B, L, V), z_t.reshape(B, L, V)
    z_s[~mask] = math.nan
    z_t[~mask] = -math.inf
    div = build(case, temperature=1.5)
    value, grad = value_and_grad(div, z_s, z_t, mask)
    keep = mask.reshape(-1)
    ref_value, ref_grad = value_and_grad(div, kept_s[keep], kept_t[keep])
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    torch.testing.assert_close(value, ref_value)
    grad = grad.reshape(B * L, V)[keep]
    torch.testing.assert_close(grad[~gone[keep]].reshape(ref_grad.shape), ref_grad)


@pytest.mark.parametrize("case", ["kl", "js", "skew_kl", "kd"])
def test_class_masked_by_the_teacher_only_is_finite(case: str) -> None:
    """Divergences finite when the teacher gives a class probability 0 and the student
    does not: the value equals the one with a finite, underflowing teacher logit."""
    z_s, z_t = logits(5, 6, seed=7, scale=2.0), logits(5, 6, seed=8, scale=2.0)
    gone = torch.zeros(5, 6, dtype=torch.bool)
    gone[0, 1] = gone[3, 4] = gone[3, 0] = True
    div = build(case, temperature=2.0)
    value, grad = value_and_grad(div, z_s, z_t.masked_fill(gone, -math.inf))
    ref_value, ref_grad = value_and_grad(div, z_s, z_t.masked_fill(gone, -1e5))  # exp underflows to 0
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    torch.testing.assert_close(value, ref_value)
    torch.testing.assert_close(grad, ref_grad)


def test_truly_infinite_values_stay_infinite() -> None:
    """Only 0 * log 0 is rewritten: reverse KL of a class the teacher masks but the student
    does not is +inf (the trainer then stops on the non-finite loss), not a large number."""
    z_s, z_t = logits(4, 5, seed=9), logits(4, 5, seed=10)
    z_t[1, 2] = -math.inf
    z_t[2, 0] = z_s[2, 0] = -math.inf  # a class masked in both, in another row
    assert get("rkl")(z_s, z_t).item() == math.inf
    z_s2 = z_s.clone()
    z_s2[0, 3] = -math.inf  # forward KL of a class the student masks but the teacher does not
    assert get("kl")(z_s2, z_t.masked_fill(torch.isinf(z_t), 0.0)).item() == math.inf
