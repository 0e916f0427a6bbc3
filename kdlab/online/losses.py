"""The losses of online distillation, pure functions of both networks' logits.

Notation: ``z_t``, ``z_s`` ``[B, C]`` logits of the teacher slot and the student;
``p = softmax(z / T)``; ``KL(a || b) = sum a (log a - log b)`` per example, then the batch
mean; ``sg`` stop-gradient. Each function returns ``(student_term, teacher_term, stats)``:
the first reaches only the student's parameters, the second only the teacher's, since the
other network's prediction is detached in each (the networks share no parameters).

**DML** (Zhang et al., CVPR 2018), two networks: the student minimises
``CE + KL(sg p_t || p_s)``, the teacher ``CE + KL(sg p_s || p_t)``; with K networks each
takes the mean over the others. T = 1 in the original; ``t2`` multiplies by T^2.

**Balanced forward / reverse KL** (kdlab's reconstruction of BD-KD's description, Amara et
al. 2022; not the published loss, whose equations were not available): the student's term
is ``mean_i [w_i KL(sg p_t || p_s)_i + (1 - w_i) KL(p_s || sg p_t)_i]`` with
``w_i = f(H(p_t,i) - H(p_s,i))`` (entropies at T): ``sigmoid(scale * gap)`` or
``1[gap > 0]``. Where the teacher is less sure than the student (gap > 0, the student
over-confident), the mass-covering forward KL dominates and raises the student's entropy;
where the student is less sure, the mode-seeking reverse KL sharpens it. ``detach_weights``
keeps the weights out of the gradient. The teacher's term: ``reverse`` ``KL(p_t || sg p_s)``
(its own distribution first), ``forward`` ``KL(sg p_s || p_t)`` or ``none``.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch

from kdlab.choices import TeacherTerm, WeightFn, values


def kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """``KL(a || b)`` per row from log-probabilities ``[B, C]`` -> ``[B]``."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def entropy(log_p: torch.Tensor) -> torch.Tensor:
    """``H(p)`` per row ``[B]``."""
    return -(log_p.exp() * log_p).sum(-1)


def _log_probs(z_t: torch.Tensor, z_s: torch.Tensor, temperature: float) -> Tuple[torch.Tensor, torch.Tensor]:
    return (torch.log_softmax(z_t.float() / temperature, -1),  # [B, C]
            torch.log_softmax(z_s.float() / temperature, -1))


def dml(z_t: torch.Tensor, z_s: torch.Tensor, temperature: float = 1.0,
        t2: bool = False) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
    """Deep mutual learning's KL terms (module docstring): ``KL(sg p_t || p_s)`` for the
    student, ``KL(sg p_s || p_t)`` for the teacher."""
    lt, ls = _log_probs(z_t, z_s, temperature)
    k = temperature ** 2 if t2 else 1.0
    return k * kl(lt.detach(), ls).mean(), k * kl(ls.detach(), lt).mean(), {}


def forward_weights(lt: torch.Tensor, ls: torch.Tensor, weight_fn: str, scale: float) -> torch.Tensor:
    """``w [B]``: the forward-KL weight of each example from the entropy gap H(p_t) - H(p_s)."""
    gap = entropy(lt) - entropy(ls)
    if weight_fn == "sigmoid":
        return torch.sigmoid(scale * gap)
    if weight_fn == "hard":
        return (gap > 0).to(gap.dtype)
    raise ValueError(f"weight_fn={weight_fn!r}; valid: {', '.join(values(WeightFn))}")


def balanced(z_t: torch.Tensor, z_s: torch.Tensor, temperature: float = 1.0, t2: bool = False,
             weight_fn: str = "sigmoid", scale: float = 1.0, detach_weights: bool = True,
             teacher_term: str = "reverse") -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
    """The balanced forward / reverse KL reconstruction (module docstring)."""
    lt, ls = _log_probs(z_t, z_s, temperature)
    k = temperature ** 2 if t2 else 1.0
    w = forward_weights(lt.detach(), ls, weight_fn, scale)  # the teacher's side never gets this gradient
    if detach_weights:
        w = w.detach()
    student = k * (w * kl(lt.detach(), ls) + (1 - w) * kl(ls, lt.detach())).mean()
    if teacher_term == "reverse":
        teacher = k * kl(lt, ls.detach()).mean()
    elif teacher_term == "forward":
        teacher = k * kl(ls.detach(), lt).mean()
    elif teacher_term == "none":
        teacher = z_t.sum() * 0.0
    else:
        raise ValueError(f"teacher_term={teacher_term!r}; valid: {', '.join(values(TeacherTerm))}")
    return student, teacher, {"forward_weight": w.detach().mean()}
