"""Logit terms of the literature: hand computations of the authors' formulas, special cases,
gradients (where the authors' code lets them flow) and float64 gradchecks."""

from __future__ import annotations

import math

import pytest
import torch

from kdlab.divergences import get
from kdlab.methods import LABEL_TERMS
from kdlab.terms import Reads

torch.manual_seed(0)


def softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def kl(a, b):
    return sum(x * (math.log(x) - math.log(y)) for x, y in zip(a, b, strict=True) if x > 0)


def logits(*shape, scale=2.0, dtype=torch.float64):
    return (scale * torch.randn(*shape)).to(dtype)


# -- skew KL / skew RKL (DistiLLM): reused from kdlab.divergences ----------------------


def test_skew_kl_is_distillm_up_to_the_teacher_entropy():
    z_s, z_t = logits(3, 5), logits(3, 5)
    ours = get("skew_kl", skew=0.1)(z_s, z_t)
    rows = []
    for s, t in zip(z_s.tolist(), z_t.tolist(), strict=True):
        p, q = softmax(t), softmax(s)
        m = [0.1 * a + 0.9 * b for a, b in zip(p, q, strict=True)]
        distillm = -sum(a * math.log(c) for a, c in zip(p, m, strict=True))  # the authors' loss
        entropy = -sum(a * math.log(a) for a in p)
        rows.append(distillm - entropy)
    assert ours.item() == pytest.approx(sum(rows) / len(rows), rel=1e-9)


def test_skew_kl_gradient_is_distillms():
    z_s, z_t = logits(3, 5).requires_grad_(), logits(3, 5)
    get("skew_kl", skew=0.1)(z_s, z_t).backward()
    z2 = z_s.detach().clone().requires_grad_()
    p, q = torch.softmax(z_t, -1), torch.softmax(z2, -1)
    (-(p * torch.log(0.1 * p + 0.9 * q)).sum(-1).mean()).backward()
    torch.testing.assert_close(z_s.grad, z2.grad)


def test_skew_rkl_by_hand():
    z_s, z_t = logits(2, 4), logits(2, 4)
    ours = get("skew_rkl", skew=0.1)(z_s, z_t)
    rows = []
    for s, t in zip(z_s.tolist(), z_t.tolist(), strict=True):
        p, q = softmax(t), softmax(s)
        rows.append(kl(q, [0.9 * a + 0.1 * b for a, b in zip(p, q, strict=True)]))
    assert ours.item() == pytest.approx(sum(rows) / 2, rel=1e-9)


# -- GKD generalized JSD: reused, endpoints special-cased -------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_gkd_jsd_by_hand(beta):
    z_s, z_t = logits(3, 4), logits(3, 4)
    rows = []
    for s, t in zip(z_s.tolist(), z_t.tolist(), strict=True):
        p, q = softmax(t), softmax(s)
        if beta == 0.0:
            rows.append(kl(p, q))
        elif beta == 1.0:
            rows.append(kl(q, p))
        else:
            m = [beta * a + (1 - beta) * b for a, b in zip(p, q, strict=True)]
            rows.append(beta * kl(p, m) + (1 - beta) * kl(q, m))
    assert get("js", beta=beta)(z_s, z_t).item() == pytest.approx(sum(rows) / 3, rel=1e-9)


def test_gkd_endpoints_are_not_limits_of_the_formula():
    z_s, z_t = logits(3, 4), logits(3, 4)
    near0 = get("js", beta=1e-6)(z_s, z_t)
    assert near0.item() < 1e-4 < get("js", beta=0.0)(z_s, z_t).item()
    torch.testing.assert_close(get("js", beta=0.0)(z_s, z_t), get("kl")(z_s, z_t))
    torch.testing.assert_close(get("js", beta=1.0)(z_s, z_t), get("rkl")(z_s, z_t))


# -- AKL ---------------------------------------------------------------------------------


def akl_by_hand(s, t, mu=0.5):
    p, q = softmax(t), softmax(s)
    order = sorted(range(len(p)), key=lambda i: -p[i])
    c, head, tail = 0.0, 0.0, 0.0
    for rank, i in enumerate(order):
        c += p[i]
        gap = abs(p[i] - q[i])
        if rank == 0 or c <= mu:
            head += gap
        else:
            tail += gap
    return head / (head + tail) * kl(p, q) + tail / (head + tail) * kl(q, p)


def test_akl_by_hand():
    z_s, z_t = logits(4, 6), logits(4, 6)
    expected = sum(akl_by_hand(s, t) for s, t in zip(z_s.tolist(), z_t.tolist(), strict=True)) / 4
    assert get("akl")(z_s, z_t).item() == pytest.approx(expected, rel=1e-9)


def test_akl_first_class_is_always_in_the_head():
    z_t = torch.tensor([[6.0, 0.0, 0.0]], dtype=torch.float64)  # p_(1) > mu
    z_s = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    w_head, w_tail = get("akl").weights(torch.log_softmax(z_s, -1), torch.log_softmax(z_t, -1))
    assert 0 < w_head.item() < 1 and w_head.item() + w_tail.item() == pytest.approx(1.0)
    assert get("akl")(z_s, z_t).item() == pytest.approx(akl_by_hand(z_s[0].tolist(), z_t[0].tolist()))


def test_akl_identical_inputs_is_zero_not_nan():
    z = logits(3, 5).requires_grad_()
    value = get("akl")(z, z.detach())
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(z.grad).all() and z.grad.abs().max() == 0


def test_akl_weights_are_detached():
    z_s, z_t = logits(2, 5).requires_grad_(), logits(2, 5)
    get("akl")(z_s, z_t).backward()
    div = get("akl")
    w_h, w_t = div.weights(torch.log_softmax(z_s.detach(), -1), torch.log_softmax(z_t, -1))
    z2 = z_s.detach().clone().requires_grad_()
    lq, lp = torch.log_softmax(z2, -1), torch.log_softmax(z_t, -1)
    fkl, rkl = (lp.exp() * (lp - lq)).sum(-1), (lq.exp() * (lq - lp)).sum(-1)
    (w_h * fkl + w_t * rkl).mean().backward()  # weights as constants
    torch.testing.assert_close(z_s.grad, z2.grad)


# -- DKD ---------------------------------------------------------------------------------


def dkd_by_hand(z_s, z_t, y, alpha, beta, T):
    tckd = nckd = 0.0
    for s, t, c in zip(z_s, z_t, y, strict=True):
        ps, pt = softmax([v / T for v in s]), softmax([v / T for v in t])
        bs, bt = [ps[c], 1 - ps[c]], [pt[c], 1 - pt[c]]
        tckd += kl(bt, bs)
        others = [i for i in range(len(s)) if i != c]
        hs = softmax([s[i] / T for i in others])  # the non-target distribution
        ht = softmax([t[i] / T for i in others])
        nckd += kl(ht, hs)
    B = len(y)
    return (alpha * tckd + beta * nckd) * T * T / B


def test_dkd_by_hand():
    z_s, z_t, y = logits(4, 5), logits(4, 5), torch.tensor([0, 3, 1, 4])
    dkd = LABEL_TERMS.build("dkd", alpha=1.0, beta=8.0, temperature=4.0, warmup=20)
    expected = dkd_by_hand(z_s.tolist(), z_t.tolist(), y.tolist(), 1.0, 8.0, 4.0)
    assert dkd(z_s, z_t, labels=y).item() == pytest.approx(expected, rel=1e-7)


def test_dkd_warmup_factor():
    dkd = LABEL_TERMS.build("dkd", warmup=20)
    dkd.set_training_epochs(240)
    z_s, z_t, y = logits(4, 5), logits(4, 5), torch.tensor([0, 3, 1, 4])
    dkd.set_progress(1.0, 0, 1)
    full = dkd(z_s, z_t, labels=y)
    for fraction, epoch in [(0.0, 1), (0.5 / 240, 1), (4.2 / 240, 5), (19.5 / 240, 20), (0.5, 121)]:
        dkd.set_progress(fraction, 0, 1)  # the loop's epoch count does not matter
        assert dkd.epoch == epoch and dkd.warmup_factor == min(epoch / 20, 1.0)
        torch.testing.assert_close(dkd(z_s, z_t, labels=y), min(epoch / 20, 1.0) * full)


def test_dkd_gradients_reach_the_student_only():
    z_s, z_t = logits(3, 4).requires_grad_(), logits(3, 4).requires_grad_()
    LABEL_TERMS.build("dkd")(z_s, z_t, labels=torch.tensor([0, 1, 2])).backward()
    assert z_s.grad.abs().sum() > 0 and z_t.grad is None


def test_dkd_gradcheck():
    z_t, y = logits(2, 4), torch.tensor([1, 3])
    dkd = LABEL_TERMS.build("dkd", temperature=2.0)
    assert torch.autograd.gradcheck(lambda z: dkd(z, z_t, labels=y), logits(2, 4).requires_grad_())


# -- PLD ---------------------------------------------------------------------------------


def pld_by_hand(z_s, z_t, y, tau):
    total = 0.0
    for s, t, c in zip(z_s, z_t, y, strict=True):
        pi = [c] + sorted((i for i in range(len(s)) if i != c), key=lambda i: -t[i])
        w = softmax([v / tau for v in t])
        for k in range(len(pi)):
            rest = [s[pi[j]] for j in range(k, len(pi))]
            m = max(rest)
            lse = m + math.log(sum(math.exp(v - m) for v in rest))
            total += w[pi[k]] * (lse - s[pi[k]])
    return total / len(y)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_pld_by_hand(tau):
    z_s, z_t, y = logits(4, 5), logits(4, 5), torch.tensor([2, 0, 4, 1])
    got = LABEL_TERMS.build("pld", tau=tau)(z_s, z_t, labels=y)
    assert got.item() == pytest.approx(pld_by_hand(z_s.tolist(), z_t.tolist(), y.tolist(), tau), rel=1e-9)


def test_pld_first_term_is_ce_weighted_by_the_teachers_gold_probability():
    # two classes: the second position's term is 0, so PLD = p_t(y) * CE(s, y)
    z_s, z_t, y = logits(3, 2), logits(3, 2), torch.tensor([0, 1, 1])
    ce = torch.nn.functional.cross_entropy(z_s, y, reduction="none")
    p_y = torch.softmax(z_t, -1).gather(-1, y[:, None]).squeeze(-1)
    torch.testing.assert_close(LABEL_TERMS.build("pld")(z_s, z_t, labels=y), (p_y * ce).mean())


def test_pld_gradients_reach_the_student_only_and_gradcheck():
    z_s, z_t = logits(3, 4).requires_grad_(), logits(3, 4).requires_grad_()
    y = torch.tensor([3, 0, 2])
    LABEL_TERMS.build("pld")(z_s, z_t, labels=y).backward()
    assert z_s.grad.abs().sum() > 0 and z_t.grad is None
    pld = LABEL_TERMS.build("pld", tau=2.0)
    assert torch.autograd.gradcheck(lambda z: pld(z, z_t.detach(), labels=y), logits(3, 4).requires_grad_())


def test_label_terms_refuse_to_run_without_labels():
    for name in ("dkd", "pld", "demd"):
        with pytest.raises(ValueError, match="needs gold labels"):
            LABEL_TERMS.build(name)(logits(2, 3), logits(2, 3))


# -- ULD ---------------------------------------------------------------------------------


def uld_by_hand(s_rows, t_rows):
    """Sequences given as lists of answer-position logit rows (already cut and aligned)."""
    per_seq = []
    for s, t in zip(s_rows, t_rows, strict=True):
        n = min(len(s), len(t))
        if n == 0:
            continue
        dist = 0.0
        for j in range(n):
            ps, pt = sorted(softmax(s[j]), reverse=True), sorted(softmax(t[j]), reverse=True)
            V = max(len(ps), len(pt))
            ps, pt = ps + [0.0] * (V - len(ps)), pt + [0.0] * (V - len(pt))
            dist += sum(abs(a - b) for a, b in zip(ps, pt, strict=True))
        per_seq.append(dist / n)
    return sum(per_seq) / len(per_seq)


def test_uld_different_vocabularies_and_spans():
    z_s, z_t = logits(2, 5, 7), logits(2, 4, 11)  # V_s = 7, V_t = 11; lengths 5 and 4
    m_s = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    m_t = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]], dtype=torch.bool)
    s_rows = [[z_s[i, j].tolist() for j in range(5) if m_s[i, j]] for i in range(2)]
    t_rows = [[z_t[i, j].tolist() for j in range(4) if m_t[i, j]] for i in range(2)]
    got = get("uld")(z_s, z_t, mask=m_s, teacher_mask=m_t)
    assert got.item() == pytest.approx(uld_by_hand(s_rows, t_rows), rel=1e-9)


def test_uld_is_zero_for_a_permuted_vocabulary_and_symmetric():
    z = logits(3, 6)
    assert get("uld")(z[:, torch.randperm(6)], z).item() == pytest.approx(0.0, abs=1e-12)
    a, b = logits(3, 6), logits(3, 9)
    torch.testing.assert_close(get("uld")(a, b), get("uld")(b, a))


def test_uld_skips_sequences_without_answer_and_detaches_the_teacher():
    z_s, z_t = logits(2, 3, 5).requires_grad_(), logits(2, 3, 8).requires_grad_()
    m = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    value = get("uld")(z_s, z_t, mask=m, teacher_mask=m)
    expected = uld_by_hand([[z_s[0, 0].tolist(), z_s[0, 1].tolist()]], [[z_t[0, 0].tolist(), z_t[0, 1].tolist()]])
    assert value.item() == pytest.approx(expected, rel=1e-9)
    value.backward()
    assert z_t.grad is None and z_s.grad[0, :2].abs().sum() > 0
    assert z_s.grad[1].abs().sum() == 0 and z_s.grad[0, 2].abs().sum() == 0



def test_uld_gathers_answers_on_the_device_as_selecting_them_would():
    """Answer positions are gathered on the device (no host synchronisation); value and
    gradient equal a per-sequence selection's (float64), whatever the other positions
    hold (NaN here), which get exactly zero gradient."""
    z_s, z_t = logits(3, 6, 7), logits(3, 5, 11)
    m_s = torch.tensor([[0, 1, 1, 1, 0, 1], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    m_t = torch.tensor([[1, 1, 0, 1, 1], [0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    junk = z_s.masked_fill(~m_s[..., None], torch.nan).requires_grad_(True)
    got = get("uld", student_temperature=2.0)(junk, z_t.masked_fill(~m_t[..., None], torch.nan), mask=m_s,
                                             teacher_mask=m_t)
    (grad,) = torch.autograd.grad(got, junk)
    rows, per_sequence = z_s.clone().requires_grad_(True), []
    for i in range(3):  # selected per sequence, matched by index
        n = min(int(m_s[i].sum()), int(m_t[i].sum()))
        if n:
            p_s = torch.softmax(rows[i][m_s[i]][:n] / 2.0, -1).sort(-1, descending=True).values
            p_t = torch.softmax(z_t[i][m_t[i]][:n], -1).sort(-1, descending=True).values
            per_sequence.append((torch.nn.functional.pad(p_s, (0, 4)) - p_t).abs().sum(-1).mean())
    expected = torch.stack(per_sequence).mean()
    (g_ref,) = torch.autograd.grad(expected, rows)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, g_ref, rtol=1e-12, atol=1e-14)
    assert torch.equal(grad[~m_s], torch.zeros_like(grad[~m_s]))


# -- DEMD (EMO) --------------------------------------------------------------------------


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def test_demd_gold_target_by_hand():
    E = torch.randn(4, 3, dtype=torch.float64)
    z_s, z_t, y = logits(3, 4), logits(3, 4), torch.tensor([1, 0, 3])
    demd = LABEL_TERMS.build("demd")
    demd.set_embeddings(E)
    rows = []
    e = [unit(r) for r in E.tolist()]
    for s, c in zip(z_s.tolist(), y.tolist(), strict=True):
        q = softmax(s)
        emd = sum(q[i] * (1 - sum(a * b for a, b in zip(e[i], e[c], strict=True))) for i in range(4))
        mle = -math.log(q[c])
        rows.append(0.5 * (mle + mle / emd * emd))
    assert demd(z_s, z_t, labels=y).item() == pytest.approx(sum(rows) / 3, rel=1e-9)


def test_demd_gradient_is_half_mle_plus_rescaled_emd():
    E = torch.randn(4, 3, dtype=torch.float64)
    z_s, y = logits(2, 4).requires_grad_(), torch.tensor([1, 2])
    demd = LABEL_TERMS.build("demd")
    demd.set_embeddings(E)
    demd(z_s, logits(2, 4), labels=y).backward()
    z2 = z_s.detach().clone().requires_grad_()
    En = torch.nn.functional.normalize(E, dim=-1)
    q = torch.softmax(z2, -1)
    emd = 1 - (En[y] * (q @ En)).sum(-1)
    mle = torch.nn.functional.cross_entropy(z2, y, reduction="none")
    (0.5 * (mle + (mle / emd).detach() * emd)).mean().backward()
    torch.testing.assert_close(z_s.grad, z2.grad)


def test_demd_embeddings_frozen_copy_get_no_gradient():
    head = torch.nn.Linear(3, 4).double()
    demd = LABEL_TERMS.build("demd")
    demd.set_embeddings(head.weight)
    with torch.no_grad():
        head.weight.add_(1.0)  # training moves the head; the frozen copy does not
    assert not torch.allclose(demd.frozen_embeddings, head.weight)
    live = LABEL_TERMS.build("demd", frozen=False)
    live.set_embeddings(head.weight)
    z_s = logits(2, 4).requires_grad_()
    live(z_s, logits(2, 4), labels=torch.tensor([0, 1])).backward()
    assert head.weight.grad is None and z_s.grad.abs().sum() > 0


def test_demd_teacher_target_extension():
    E = torch.randn(4, 3, dtype=torch.float64)
    z_s, z_t = logits(3, 4), logits(3, 4)
    demd = LABEL_TERMS.build("demd", target="teacher")
    assert Reads.LABELS not in demd.reads and Reads.LABELS in LABEL_TERMS.build("demd").reads
    demd.set_embeddings(E)
    e = [unit(r) for r in E.tolist()]
    rows = []
    for s, t in zip(z_s.tolist(), z_t.tolist(), strict=True):
        q, p = softmax(s), softmax(t)
        rows.append(sum(p[i] * q[j] * (1 - sum(a * b for a, b in zip(e[i], e[j], strict=True)))
                        for i in range(4) for j in range(4)))
    assert demd(z_s, z_t).item() == pytest.approx(sum(rows) / 3, rel=1e-9)
