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


def _answer(z: Tensor, mask: Optional[Tensor], i: int) -> Tensor:
    """Row ``i``'s answer positions ``[n, V]``, left-aligned (masked positions removed)."""
    rows = z[i] if z.dim() == 3 else z[i : i + 1]
    return rows if mask is None else rows[mask[i]]


@REGISTRY.register("uld")
class UniversalLogitDistillation(torch.nn.Module):
    """Sorted-probability L1 distance, the one term that allows different vocabularies.

    ``P_s = softmax(z_s / T_s)``, ``P_t = softmax(z_t / T_t)``, each sorted descending
    along its own vocabulary and the smaller one zero-padded to the larger size (so the
    vocabularies need not match, nor be aligned). Each model's logits are cut to its own
    answer span (``mask`` for the student, ``teacher_mask`` for the teacher, True = answer
    token) and left-aligned; positions are matched by index. Per sequence, the mean over
    positions ``j < min(len_s, len_t)`` of ``sum_v |P_s_sorted - P_t_sorted|``; then the
    mean over sequences that have any matched position. Symmetric in student and teacher;
    the teacher side is detached.

    Inputs: ``[B, T, V]`` logits (``V`` and ``T`` may differ between the two), or ``[B, V]``
    (one position per row). ``teacher_mask`` defaults to ``mask`` when the sequence
    lengths agree.

    Defaults (the paper's): T_s = T_t = 1, total ``CE + 1.5 * ULD``. The published runs also
    drop the student's EOS answer token (a data choice, not part of this term).
    """

    needs_teacher_mask = True
    cross_tokenizer = True  # teacher and student may have different tokenizers
    needs_class_distributions = True  # sorted softmax probabilities: all 1 on one output

    def __init__(self, student_temperature: float = 1.0, teacher_temperature: float = 1.0) -> None:
        super().__init__()
        self.student_temperature = check_range("student_temperature", student_temperature, 0.0, low_open=True)
        self.teacher_temperature = check_range("teacher_temperature", teacher_temperature, 0.0, low_open=True)

    def check_setting(self, task: Any, family: str) -> None:
        if family == "encoder":
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
        per_sequence = []
        with no_autocast(z_s):
            for i in range(z_s.shape[0]):
                s, t = _answer(z_s, mask, i), _answer(z_t, teacher_mask, i)  # [n_s, V_s], [n_t, V_t]
                n = min(s.shape[0], t.shape[0])
                if n == 0:
                    continue
                p_s = torch.softmax(compute_dtype(s[:n]) / self.student_temperature, dim=-1)
                p_t = torch.softmax(compute_dtype(t[:n]) / self.teacher_temperature, dim=-1)
                p_s = p_s.sort(dim=-1, descending=True).values
                p_t = p_t.sort(dim=-1, descending=True).values
                gap = p_s.shape[-1] - p_t.shape[-1]
                if gap > 0:
                    p_t = F.pad(p_t, (0, gap))
                elif gap < 0:
                    p_s = F.pad(p_s, (0, -gap))
                per_sequence.append((p_s - p_t).abs().sum(-1).mean())
        if not per_sequence:
            return compute_dtype(z_s).sum() * 0.0
        return torch.stack(per_sequence).mean()

    def extra_repr(self) -> str:
        return f"student_temperature={self.student_temperature}, teacher_temperature={self.teacher_temperature}"
