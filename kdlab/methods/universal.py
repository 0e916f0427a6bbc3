"""ULD, universal logit distillation (Boizard et al., "Towards Cross-Tokenizer
Distillation: the Universal Logit Distillation Loss for LLMs", 2024; code
Nicolas-BZRD/llm-recipes ``models/distillation_model.py`` @ab6e798)."""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.divergences import REGISTRY
from kdlab.divergences.base import check_range, compute_dtype, no_autocast
from kdlab.errors import ConfigError
from kdlab.families.base import Family
from kdlab.terms import LOGITS, LogitTerm, Reads


def _left_aligned(z: Tensor, mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """``(a [B, T, V], n [B])``: each row's answer positions moved to the front (its k-th
    answer position at k; positions from ``n[b]`` on hold anything) and their count.
    Gathered on the device: selecting them (``z[b][mask[b]]``) would wait for it."""
    if z.dim() == 2:  # one position per row
        z = z[:, None]
    B, T, V = z.shape
    if mask is None:
        return z, torch.full((B,), T, dtype=torch.long, device=z.device)
    rank = mask.long().cumsum(-1) - 1  # [B, T]: k of each answer position
    pos = torch.zeros(B, T + 1, dtype=torch.long, device=z.device)  # column T: where the others go
    pos.scatter_(1, torch.where(mask, rank, T), torch.arange(T, device=z.device).expand(B, T))
    return z.gather(1, pos[:, :T, None].expand(B, T, V)), mask.sum(-1)


@REGISTRY.register("uld")
class UniversalLogitDistillation(LogitTerm):
    """Sorted-probability L1 distance, the one term that allows different vocabularies.

    ``P_s = softmax(z_s / T_s)``, ``P_t = softmax(z_t / T_t)``, each sorted descending
    along its own vocabulary and the smaller one zero-padded to the larger size (so the
    vocabularies need not match, nor be aligned). Each model's logits are cut to its own
    answer span (``mask`` for the student, ``teacher_mask`` for the teacher, True = answer
    token) and left-aligned; positions are matched by index (gathered on the device, no
    host synchronisation; unmatched positions are replaced by exact zeros, value and
    gradient). Per sequence, the mean over
    positions ``j < min(len_s, len_t)`` of ``sum_v |P_s_sorted - P_t_sorted|``; then the
    mean over sequences that have any matched position. Symmetric in student and teacher;
    the teacher side is detached.

    Inputs: ``[B, T, V]`` logits (``V`` and ``T`` may differ between the two), or ``[B, V]``
    (one position per row). ``teacher_mask`` defaults to ``mask`` when the sequence
    lengths agree.

    Defaults (the paper's): T_s = T_t = 1, total ``CE + 1.5 * ULD``. The published runs also
    drop the student's EOS answer token (a data choice, not part of this term).
    """

    reads = LOGITS | Reads.TOKEN_MASK | Reads.TEACHER_MASK  # each model's own answer span
    cross_tokenizer = True  # teacher and student may have different tokenizers
    needs_class_distributions = True  # sorted softmax probabilities: all 1 on one output

    def __init__(self, student_temperature: float = 1.0, teacher_temperature: float = 1.0) -> None:
        super().__init__()
        self.student_temperature = check_range("student_temperature", student_temperature, 0.0, low_open=True)
        self.teacher_temperature = check_range("teacher_temperature", teacher_temperature, 0.0, low_open=True)

    def check_setting(self, task: Any, family: Family) -> None:
        if family.class_logits:
            raise ConfigError("needs answer spans (each model's answer tokens): teacher.family=seq2seq or "
                              "causal; the encoder family's class logits have none")

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, mask: Optional[Tensor] = None,
                teacher_mask: Optional[Tensor] = None) -> Tensor:
        z_s, z_t = student_logits, teacher_logits.detach()
        if z_s.dim() not in (2, 3) or z_t.dim() != z_s.dim() or z_s.shape[0] != z_t.shape[0]:
            raise ValueError(f"uld: logits must be [B, T, V] or [B, V] with the same B, got "
                             f"{tuple(z_s.shape)} and {tuple(z_t.shape)}")
        if teacher_mask is None and mask is not None:
            if z_t.shape[:-1] != mask.shape:
                raise ValueError("uld: the teacher's sequence length differs from the student's; "
                                 "give teacher_mask (the teacher's answer tokens)")
            teacher_mask = mask
        with no_autocast(z_s):
            (s, n_s), (t, n_t) = _left_aligned(z_s, mask), _left_aligned(z_t, teacher_mask)
            K = min(s.shape[1], t.shape[1])
            n = torch.minimum(n_s, n_t)  # [B] matched positions per sequence
            matched = torch.arange(K, device=s.device) < n[:, None]  # [B, K]
            s = torch.where(matched[..., None], compute_dtype(s[:, :K]), 0.0)  # [B, K, V_s]
            t = torch.where(matched[..., None], compute_dtype(t[:, :K]), 0.0)  # [B, K, V_t]
            p_s = torch.softmax(s / self.student_temperature, dim=-1).sort(dim=-1, descending=True).values
            p_t = torch.softmax(t / self.teacher_temperature, dim=-1).sort(dim=-1, descending=True).values
            gap = p_s.shape[-1] - p_t.shape[-1]
            if gap > 0:
                p_t = F.pad(p_t, (0, gap))
            elif gap < 0:
                p_s = F.pad(p_s, (0, -gap))
            d = torch.where(matched, (p_s - p_t).abs().sum(-1), 0.0)  # [B, K]
            per_sequence = d.sum(-1) / n.clamp_min(1).to(d.dtype)  # [B]
            has = n > 0
            return per_sequence.sum() / has.sum().clamp_min(1).to(d.dtype)

    def extra_repr(self) -> str:
        return f"student_temperature={self.student_temperature}, teacher_temperature={self.teacher_temperature}"
