"""Kullback-Leibler divergences and Hinton's soft-target cross-entropy.

Notation: ``p = softmax(z_t / T)`` teacher (the reference), ``q = softmax(z_s / T)``
student, ``KL(a || b) = sum_c a_c (log a_c - log b_c)``.
"""

from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import Tensor

from kdlab.divergences import REGISTRY
from kdlab.divergences.base import LogitDivergence, check_choice

# objective.kd.anneal: the KD temperature schedule (see kd_temperature)
ANNEAL = ("none", "epoch", "step")


def kd_temperature(t0: float, schedule: str, fraction: float, epoch: int, epochs: int) -> float:
    """The KD temperature of ``objective.kd.anneal=schedule``, from ``t0`` down to 1.

    - ``epoch`` (SinKD's ``DistillKL_anneal``, the published schedule): constant within an
      epoch, ``T_e = t0 + (1 - t0) * e / (E - 1)`` for the 0-based epoch ``e`` of ``E``, so the
      first epoch runs at ``t0`` and the last at 1. A partial last epoch (``trainer.epochs``
      fractional) counts as an epoch; with ``E = 1`` there is nothing to anneal: ``t0``.
    - ``step``: lowered at every optimiser step, ``t0 - (t0 - 1) * fraction``; it reaches 1
      only at the end of training.
    - ``none``: ``t0``.
    """
    if schedule == "step":
        return t0 - (t0 - 1.0) * min(max(fraction, 0.0), 1.0)
    if schedule == "epoch" and epochs > 1:
        return t0 + (1.0 - t0) * min(max(epoch, 0), epochs - 1) / (epochs - 1)
    return t0


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

    ``anneal`` (``ANNEAL``; ``objective.kd.anneal`` for the objective's alpha term)
    schedules the temperature from its value at build time down to 1 during training: see
    ``kd_temperature``.
    """

    fused = True
    infinite_at = "student"
    zero_on_identical = False  # the teacher's entropy

    def __init__(self, temperature: float = 1.0, t2: bool = False, reduction: str = "mean",
                 check_inputs: bool = False, anneal: str = "none") -> None:
        super().__init__(temperature, t2, reduction, check_inputs)
        self.anneal = check_choice("anneal", anneal, ANNEAL)
        self.t0 = self.temperature

    def set_progress(self, fraction: float, epoch: int, epochs: int) -> None:
        if self.anneal != "none":
            self.temperature = kd_temperature(self.t0, self.anneal, fraction, epoch, epochs)

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
