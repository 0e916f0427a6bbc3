"""AKL, adaptive Kullback-Leibler divergence (Wu et al., "Rethinking Kullback-Leibler
Divergence in Knowledge Distillation for Large Language Models", 2024; code
wutaiqiang/LLM_KD_AKL ``AKL.py`` @ff278be)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from kdlab.divergences import REGISTRY
from kdlab.divergences.base import LogitDivergence, check_range
from kdlab.divergences.kl import kl_terms


@REGISTRY.register("akl")
class AdaptiveKL(LogitDivergence):
    """``w_head KL(p || q) + w_tail KL(q || p)`` per position, token mean.

    Per position, with ``p`` the teacher (reference of the head/tail split) and ``q`` the
    student (no temperature in the paper: T = 1):

    1. sort ``p`` descending and gather ``q`` in the same order; ``e_i = |p_(i) - q_(i)|``,
       ``c_i = cumsum p_(i)``;
    2. the head holds the classes with ``c_i <= mu`` (the first class always), the tail
       the rest; ``g_head = sum_head e``, ``g_tail = sum_tail e``;
    3. ``w_head = g_head / (g_head + g_tail)``, ``w_tail = g_tail / (g_head + g_tail)``,
       computed without gradient (``q`` is detached there). When ``p = q`` both gaps are
       0: the original then gives NaN; here both weights are 1/2 (the value is 0 either way).

    Args:
        mu: head mass, default 0.5.
    """

    def __init__(self, mu: float = 0.5, **kw) -> None:
        super().__init__(**kw)
        self.mu = check_range("mu", mu, 0.0, 1.0)

    def weights(self, log_q: Tensor, log_p: Tensor, p: Optional[Tensor] = None,
                q: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """``(w_head, w_tail)`` per position ``[N]``, no gradient (``p``, ``q``: the
        probabilities, when the caller has them)."""
        with torch.no_grad():
            p = log_p.exp() if p is None else p
            q = log_q.exp() if q is None else q
            p_sorted, order = p.sort(dim=-1, descending=True)  # [N, C]
            gap = (p_sorted - q.gather(-1, order)).abs()
            tail = p_sorted.cumsum(-1) > self.mu
            tail[:, 0] = False  # the most likely class is always in the head
            g_tail = (gap * tail).sum(-1)
            g_head = (gap * ~tail).sum(-1)
            total = g_head + g_tail
            safe = total > 0
            w_head = torch.where(safe, g_head / total.clamp_min(torch.finfo(total.dtype).tiny), 0.5)
            w_tail = torch.where(safe, g_tail / total.clamp_min(torch.finfo(total.dtype).tiny), 0.5)
        return w_head, w_tail

    fused = True
    # +inf where either KL is; with a weight of exactly 0 the original's 0 * inf is NaN
    infinite_at = "either"

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        w_head, w_tail = self.weights(log_q, log_p)
        return w_head * kl_terms(log_p, log_q) + w_tail * kl_terms(log_q, log_p)

    def value_and_grad(self, log_q: Tensor, log_p: Tensor) -> tuple[Tensor, Tensor]:
        """The weights are constants of the gradient: ``dD/dlog q`` is
        ``-w_head p + w_tail q (log q - log p)`` (up to a multiple of q)."""
        p, q = log_p.exp(), log_q.exp()
        w_head, w_tail = self.weights(log_q, log_p, p.detach(), q.detach())
        q_log_ratio = q * (log_q - log_p)
        value = w_head * kl_terms(log_p, log_q) + w_tail * q_log_ratio.sum(-1)
        return value, q_log_ratio.mul_(w_tail[:, None]).sub_(p.mul_(w_head[:, None]))

    def value_and_logit_grad(self, log_q: Tensor, log_p: Tensor) -> tuple[Tensor, Tensor]:
        """Closed form of the softmax Jacobian applied to the above:
        ``w_head (q - p) + w_tail q (log q - log p - KL(q || p))``, exactly 0 when p = q."""
        p, q = log_p.exp(), log_q.exp()
        w_head, w_tail = self.weights(log_q, log_p, p, q)
        q_log_ratio = q * (log_q - log_p)
        kl_qp = q_log_ratio.sum(-1)
        value = w_head * kl_terms(log_p, log_q) + w_tail * kl_qp
        grad = torch.addcmul(q_log_ratio, q, kl_qp[:, None], value=-1.0).mul_(w_tail[:, None])
        return value, grad.add_((q - p).mul_(w_head[:, None]))

    def extra_repr(self) -> str:
        return f"mu={self.mu}, " + super().extra_repr()
