"""Divergences against a sparse (top-k + tail bucket) teacher: equal to the dense ones when
k = V, the collapsed KL below the full KL by exactly the teacher tail's share otherwise."""

import pytest
import torch

from kdlab import divergences
from kdlab.divergences.sparse import SparseTeacher, accepts_sparse, sparse_divergence
from kdlab.errors import ConfigError
from kdlab.token_cache import top_k_rows

B, T, V = 3, 4, 40


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(B, T, V, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    t = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 3
    mask = torch.rand(B, T, generator=g) > 0.3
    mask[0, 0] = True
    return s, t, mask


def sparse_of(t: torch.Tensor, k: int, temperature: float = 1.0) -> SparseTeacher:
    logp, index, tail = top_k_rows(t.reshape(-1, V), k, temperature)  # float64 kept
    return SparseTeacher(logp.reshape(B, T, -1), index.reshape(B, T, -1), tail.reshape(B, T), temperature)


NAMES = ["kl", "rkl", "kd", "skl", "js", "tvd", "hellinger", "alpha", "skew_kl", "akl"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_k_equal_to_vocabulary_gives_the_dense_value_and_gradient(name, temperature):
    s, t, mask = inputs()
    div = divergences.get(name, temperature=temperature, t2=True)
    dense = div(s, t, mask=mask)
    (g_dense,) = torch.autograd.grad(dense, s)
    sparse = sparse_divergence(div, s, sparse_of(t, V, temperature), mask=mask)
    (g_sparse,) = torch.autograd.grad(sparse, s)
    torch.testing.assert_close(sparse, dense, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_sparse, g_dense, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("k", [1, 5, 20, V - 1])
def test_collapsed_kl_is_the_full_kl_less_the_teachers_tail_share(k):
    """Data processing: KL(p || q) = KL(collapsed) + P KL(p_tail / P || q_tail / Q), with P,
    Q the teacher's and student's mass outside the teacher's top k; so collapsed <= full."""
    s, t, _ = inputs(1)
    div = divergences.get("kl", reduction="sum")
    full = div(s, t)
    collapsed = sparse_divergence(div, s, sparse_of(t, k))
    assert collapsed <= full + 1e-12
    log_p, log_q = torch.log_softmax(t, -1).reshape(-1, V), torch.log_softmax(s, -1).reshape(-1, V)
    _, index = log_p.topk(k, -1)
    tail = torch.ones_like(log_p, dtype=torch.bool).scatter(-1, index, False)
    lp = log_p.masked_fill(~tail, -torch.inf)
    lq = log_q.masked_fill(~tail, -torch.inf)
    P, Q = lp.logsumexp(-1, keepdim=True), lq.logsumexp(-1, keepdim=True)
    inside = torch.where(tail, (lp - P).exp() * ((lp - P) - (lq - Q)), 0.0).sum(-1)
    torch.testing.assert_close(full - collapsed, (P.squeeze(-1).exp() * inside).sum(), rtol=1e-9, atol=1e-12)
    if k < V - 1:
        assert full - collapsed > 1e-6  # a tail of several tokens loses its shape


def test_the_tail_carries_the_gradient_of_the_mass_left():
    """k = 1: the student is pulled toward the teacher's mass outside its argmax, not only
    toward its argmax (a top-k renormalised over k tokens would make k = 1 trivial)."""
    s, t, _ = inputs(2)
    div = divergences.get("kl")
    value = sparse_divergence(div, s, sparse_of(t, 1))
    assert value > 0
    (g,) = torch.autograd.grad(value, s)
    assert g.abs().sum() > 0


def test_a_teacher_tail_of_mass_zero_gives_finite_values_and_gradients():
    s, t, mask = inputs(3)
    teacher = sparse_of(t, 5)
    teacher.tail = torch.full_like(teacher.tail, -torch.inf)
    teacher.logp = torch.log_softmax(teacher.logp, -1)  # all the mass on the top 5
    for name in ("kl", "rkl", "js", "alpha"):
        value = sparse_divergence(divergences.get(name), s, teacher, mask=mask)
        (g,) = torch.autograd.grad(value, s)
        assert torch.isfinite(value) and torch.isfinite(g).all(), name


def test_terms_that_need_the_full_distribution_or_another_temperature_are_refused():
    s, t, mask = inputs()
    assert not accepts_sparse(divergences.get("mse"))
    with pytest.raises(ConfigError, match="top_k=null"):
        sparse_divergence(divergences.get("mse"), s, sparse_of(t, 5), mask=mask)
    with pytest.raises(ConfigError, match="temperature"):
        sparse_divergence(divergences.get("kl", temperature=2.0), s, sparse_of(t, 5, 1.0), mask=mask)


@pytest.mark.parametrize("name", ["kl", "rkl", "js", "akl"])
@pytest.mark.parametrize("k", [5, V])
def test_masked_positions_give_the_kept_rows_value_and_gradient_whatever_they_hold(name, k):
    """Masked positions are computed and zeroed on the device, not selected: the value and
    gradient are those of the kept rows alone (float64), even where the masked positions
    hold NaN logits, NaN log-probabilities and out-of-range indices."""
    s, t, mask = inputs(2)
    div = divergences.get(name, temperature=2.0, t2=True)
    teacher = sparse_of(t, k, 2.0)
    s_garbage = torch.where(mask[..., None], s, torch.nan)
    garbage = SparseTeacher(teacher.logp.masked_fill(~mask[..., None], torch.nan),
                            teacher.index.masked_fill(~mask[..., None], 10 * V),
                            teacher.tail.masked_fill(~mask, torch.nan), 2.0)
    masked = sparse_divergence(div, s_garbage, garbage, mask=mask)
    (g_masked,) = torch.autograd.grad(masked, s)
    rows = s[mask].detach().requires_grad_(True)
    kept = SparseTeacher(teacher.logp[mask], teacher.index[mask], teacher.tail[mask], 2.0)
    alone = sparse_divergence(div, rows, kept)
    (g_rows,) = torch.autograd.grad(alone, rows)
    torch.testing.assert_close(masked, alone, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_masked[mask], g_rows, rtol=1e-12, atol=1e-14)
    assert torch.equal(g_masked[~mask], torch.zeros_like(g_masked[~mask]))
