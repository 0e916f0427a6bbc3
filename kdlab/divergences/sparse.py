"""Divergences against a sparse teacher: its top-k log-probabilities and the tail collapsed.

A token-level teacher cache (``kdlab.token_cache``) keeps, per answer token, the teacher's
``k`` most likely tokens (``index``), their log-probabilities (``logp``) and the log of
the mass left over (``tail = log(1 - sum exp(logp))``), at the temperature the objective
uses. The full distribution over the vocabulary is gone, so what is computed is the exact
divergence between two distributions over ``k + 1`` outcomes:

- the teacher's: ``(p_1, ..., p_k, 1 - sum p_i)``, the stored values;
- the student's, aggregated the same way: ``(q_1, ..., q_k, 1 - sum q_i)`` with ``q_i`` its
  probabilities at the teacher's ``k`` indices (``log_softmax(z_s / T)`` gathered) and the
  last outcome the log-sum-exp of its other ``V - k`` log-probabilities (the ``k`` entries
  masked out, no cancellation in ``1 - sum``).

Each divergence's own ``pointwise`` formula is applied to these ``[N, k + 1]``
log-probabilities. With ``k = V`` there is no tail (it is omitted) and the value, and its
gradient, are the dense divergence's. With ``k < V`` the value differs from the dense one
by what the divergence sees inside the tail: for every f-divergence merging outcomes can
only lower it (data-processing inequality), so the sparse KL is a lower bound of the full
KL, short of it by ``sum_tail p log(p / q) - P log(P / Q)`` (``P``, ``Q`` the two tail
masses): zero when the student's tail is proportional to the teacher's. The student is
pulled toward the teacher's head and toward the right total tail mass, not toward the
teacher's shape inside the tail. (Renormalising over the k tokens and dropping the tail
would also discard the total tail mass; keeping it as a bucket is exact for what is
stored.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from kdlab.divergences.base import (
    LOG_CAP,
    LOG_CAP_FP16,
    LogitDivergence,
    check_range,
    compute_dtype,
    no_autocast,
    reduce,
)
from kdlab.divergences.chunked import recomputed_values
from kdlab.errors import ConfigError

# Teacher log-probabilities are raised to at least this before the formulas: exp of it is
# 0 in float32 and float64, so the value is unchanged, but a stored -inf (a token of
# probability exactly 0, a tail of mass 0) meets 0 * finite instead of 0 * inf = NaN.
LOG_FLOOR = -1e4


@dataclass
class SparseTeacher:
    """The teacher's token distributions, top-k plus a tail bucket, at ``temperature``.

    ``logp [..., k]`` float log-probabilities, ``index [..., k]`` long token ids (distinct
    per position), ``tail [...]`` float log of the remaining mass; ``...`` is ``[B, T]``
    in a batch (positions outside the answer hold anything: they are masked).
    """

    logp: Tensor
    index: Tensor
    tail: Tensor
    temperature: float = 1.0

    @property
    def k(self) -> int:
        return int(self.logp.shape[-1])


def accepts_sparse(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a divergence of softmax distributions that can take a sparse
    teacher: a ``LogitDivergence`` whose ``prepare`` is the plain log-softmax (not
    ``mse``, which compares raw logits; Sinkhorn / ULD need every class, so are not
    ``LogitDivergence``s)."""
    return isinstance(module, LogitDivergence) and module.takes_sparse_teacher


def collapse(log_q: Tensor, index: Tensor, with_tail: bool) -> Tensor:
    """The student's log-probabilities ``[N, V]`` aggregated on the teacher's outcomes:
    ``[N, k]`` at ``index`` then, if ``with_tail``, the log of the remaining mass ``[N, 1]``
    (log-sum-exp over the tokens not in ``index``)."""
    head = log_q.gather(-1, index)  # [N, k]
    if not with_tail:
        return head
    rest = log_q.scatter(-1, index, -math.inf).logsumexp(-1, keepdim=True)  # [N, 1]
    return torch.cat([head, rest], dim=-1)


def teacher_outcomes(teacher: SparseTeacher, with_tail: bool, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Flattened ``(log_p [N, k(+1)], index [N, k])`` of the teacher's outcomes."""
    k = teacher.k
    logp = teacher.logp.reshape(-1, k).to(dtype)
    if with_tail:
        logp = torch.cat([logp, teacher.tail.reshape(-1, 1).to(dtype)], dim=-1)
    return logp.clamp_min(LOG_FLOOR), teacher.index.reshape(-1, k).long()


def sparse_divergence(div: torch.nn.Module, student_logits: Tensor, teacher: SparseTeacher,
                      mask: Optional[Tensor] = None) -> Tensor:
    """``div`` (see ``accepts_sparse``) between the student's logits ``[..., V]`` and a
    sparse teacher ``[..., k]``, on the ``k + 1`` outcomes of the module docstring; mask,
    temperature (the student's logits divided by ``div.temperature``, which must be the
    one the teacher was stored at), T^2 and reduction as in ``LogitDivergence.forward``.

    Like the dense divergences it never waits for the device: every position is computed,
    by blocks of rows (``kdlab.divergences.chunked``: no ``[N, V]`` temporary but the
    gradient), and the masked ones are replaced by exact zeros (value and gradient)."""
    if not accepts_sparse(div):
        raise ConfigError(f"{type(div).__name__} cannot use a top-k teacher cache (it needs the teacher's "
                          "full distribution); set trainer.teacher_cache.top_k=null")
    T = check_range("temperature", div.temperature, 0.0, low_open=True)
    if not math.isclose(T, teacher.temperature):
        raise ConfigError(f"{type(div).__name__} runs at temperature {T} but the teacher cache holds "
                          f"log-probabilities at {teacher.temperature}; the tail mass cannot be rescaled")
    V, k = student_logits.shape[-1], teacher.k
    lead = student_logits.shape[:-1]
    if teacher.logp.shape[:-1] != lead or teacher.index.shape != teacher.logp.shape or teacher.tail.shape != lead:
        raise ValueError(f"sparse teacher logp {tuple(teacher.logp.shape)}, index {tuple(teacher.index.shape)}, "
                         f"tail {tuple(teacher.tail.shape)} do not match student logits {tuple(student_logits.shape)}")
    if k > V:
        raise ValueError(f"the teacher cache keeps k={k} tokens but the student's vocabulary has {V}")
    n_rows = student_logits.shape[0] if student_logits.dim() > 1 else 1
    with_tail = k < V
    s = student_logits.reshape(-1, V)
    keep = None if mask is None else mask.reshape(-1)
    with no_autocast(s):
        log_p, index = teacher_outcomes(teacher, with_tail, torch.promote_types(s.dtype, torch.float32))
        if keep is not None:  # a masked position's indices may hold anything
            index = torch.where(keep[:, None], index, 0)
        div.log_cap = LOG_CAP_FP16 if student_logits.dtype == torch.float16 else LOG_CAP

        def block(s_rows: Tensor, rows: Tensor, with_grad: bool) -> tuple[Tensor, None]:
            # rows [n]: the block's row numbers, to pick its teacher outcomes
            z = compute_dtype(s_rows)
            log_q = collapse(torch.log_softmax(z / T if T != 1.0 else z, dim=-1), index[rows], with_tail)
            return div.pointwise(log_q, log_p[rows]), None

        rows = torch.arange(s.shape[0], device=s.device)
        out = reduce(recomputed_values(block, s, rows, keep), n_rows, div.reduction, keep)
        if div.t2:
            out = out * T**2
    return out
