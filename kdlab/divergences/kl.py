"""Kullback-Leibler divergences and Hinton's soft-target cross-entropy.

Notation: ``p = softmax(z_t / T)`` teacher (the reference), ``q = softmax(z_s / T)``
student, ``KL(a || b) = sum_c a_c (log a_c - log b_c)``.
"""

from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import Tensor

from kdlab.divergences import REGISTRY
from kdlab.divergences.base import LogitDivergence


def kl_terms(log_a: Tensor, log_b: Tensor) -> Tensor:
    """KL(a || b) per row from log-probabilities, ``[N, C] -> [N]``.

    ``exp(log_a) * (log_a - log_b)``: a class whose probability underflows to 0 has a
    finite log-probability from log_softmax, so it contributes exactly 0, never NaN.
    """
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def teacher_weighted(
    log_q: Tensor, log_p: Tensor, pointwise: Callable[[Tensor, Tensor, Tensor], Tensor]
) -> Tuple[Tensor, Tensor]:
    """Value and ``dD/d(s / T) = q - p`` of a divergence whose ``dD/dlog q`` is ``-p``
    (forward KL, soft-target cross-entropy): ``p`` is computed once for both."""
    p = log_p.exp()
    return pointwise(log_q, log_p, p), log_q.exp().sub_(p)


@REGISTRY.register("kd")
class SoftTargetCE(LogitDivergence):
    """Hinton soft-target cross-entropy: ``-sum_c p_c log q_c``, mean over samples.

    Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015. Equals
    ``KL(p || q) + H(p)``: same gradient as forward KL, but it is *not* zero when student
    and teacher agree (it is the teacher's entropy then). This is the KD term of the
    SinKD scripts (no T^2 there: ``t2=False``).
    """

    fused = True
    infinite_at = "student"
    zero_on_identical = False  # the teacher's entropy

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return self.pointwise_from_p(log_q, log_p, log_p.exp())

    @staticmethod
    def pointwise_from_p(log_q: Tensor, log_p: Tensor, p: Tensor) -> Tensor:
        return -torch.einsum("...c,...c->...", p, log_q)  # no [N, C] product

    def grad_log_q(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return -log_p.exp()

    def value_and_logit_grad(self, log_q: Tensor, log_p: Tensor) -> Tuple[Tensor, Tensor]:
        return teacher_weighted(log_q, log_p, self.pointwise_from_p)


@REGISTRY.register("kl")
class ForwardKL(LogitDivergence):
    """Forward KL, teacher as reference: ``KL(p || q) = sum_c p_c (log p_c - log q_c)``.

    Mean-seeking (the student covers all of the teacher's mass). Kullback and Leibler
    1951; the usual KD divergence (Hinton et al. 2015 up to the teacher entropy).
    """

    fused = True
    infinite_at = "student"

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return kl_terms(log_p, log_q).clamp_min(0.0)

    @staticmethod
    def pointwise_from_p(log_q: Tensor, log_p: Tensor, p: Tensor) -> Tensor:
        return torch.einsum("...c,...c->...", p, log_p - log_q).clamp_min(0.0)

    def grad_log_q(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return -log_p.exp()

    def value_and_logit_grad(self, log_q: Tensor, log_p: Tensor) -> Tuple[Tensor, Tensor]:
        return teacher_weighted(log_q, log_p, self.pointwise_from_p)


@REGISTRY.register("rkl")
class ReverseKL(LogitDivergence):
    """Reverse KL, student as reference: ``KL(q || p) = sum_c q_c (log q_c - log p_c)``.

    Mode-seeking (the student concentrates on the teacher's main modes); used for LLM
    distillation in MiniLLM (Gu et al. 2024).
    """

    fused = True
    infinite_at = "teacher"

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return kl_terms(log_q, log_p).clamp_min(0.0)

    def grad_log_q(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return log_q.exp() * (log_q - log_p)


@REGISTRY.register("skl")
class SymmetricKL(LogitDivergence):
    """Symmetric KL (Jeffreys): ``KL(p || q) + KL(q || p) = sum_c (p_c - q_c)(log p_c - log q_c)``.

    Jeffreys 1946. Every class contributes a non-negative term.
    """

    fused = True
    infinite_at = "either"

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1)

    def grad_log_q(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return log_q.exp() * (log_q - log_p) - log_p.exp()
