"""Intermediate-layer terms of DistilBERT and Patient KD.

Both read hidden states ``[B, L, H]`` (index 0 the embeddings, i the output of block i)
from ``Outputs``: every family returns them when a feature term asks (``Family.features``).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from kdlab.divergences.base import check_choice
from kdlab.errors import ConfigError
from kdlab.families.base import Outputs
from kdlab.features import FEATURE_TERMS, LayerMatch, distance, layer_count
from kdlab.terms import Reads


class HiddenStatePairs(LayerMatch):
    """A term on the hidden states of both models (the teacher's detached by the term)."""

    reads = Reads.HIDDEN_STATES

    def hidden_pair(self, student: Outputs, teacher: Outputs) -> Tuple[tuple, tuple, torch.Tensor]:
        """``(student hidden states, teacher hidden states, the student's real tokens [B, L])``."""
        (h_s, mask), (h_t, _) = self.select(student), self.select(teacher)
        return h_s, h_t, mask


def _widths(teacher: torch.nn.Module, student: torch.nn.Module) -> Tuple[int, int]:
    return int(teacher.config.hidden_size), int(student.config.hidden_size)


@FEATURE_TERMS.register("distilbert_cos")
class DistilBertCosine(HiddenStatePairs):
    """DistilBERT's cosine loss (Sanh et al. 2019; huggingface/transformers
    ``examples/research_projects/distillation/distiller.py``).

    ``mean_tokens (1 - cos(h_s, h_t))`` on the last hidden layer of student and teacher,
    over real (non-padding) tokens; the teacher detached. The recipe weights it
    ``alpha_cos = 1`` next to ``alpha_ce = 5`` (KL at T = 2, times T^2) and ``alpha_mlm = 2``.
    The models must have the same hidden width: DistilBERT has no projection.
    ``projection=True`` (an extension) learns a linear map when the widths differ.
    """

    def __init__(self, projection: bool = False, stack: Optional[str] = None) -> None:
        super().__init__([[-1, -1]], loss="cosine", stack=stack)
        self.projection = bool(projection)

    def bind(self, teacher: torch.nn.Module, student: torch.nn.Module, stacks: Sequence[str]) -> None:
        stack = self.resolve_stack(stacks)
        self.pairs = [[layer_count(teacher.config, stack), layer_count(student.config, stack)]]
        super().bind(teacher, student, stacks)
        d_t, d_s = _widths(teacher, student)
        if d_t != d_s and not self.projection:
            raise ConfigError(f"distilbert_cos needs teacher and student of the same hidden width (teacher "
                              f"{d_t}, student {d_s}); DistilBERT has no projection (params.projection=true "
                              "learns one, an extension)")
        self.proj = torch.nn.Linear(d_s, d_t) if d_t != d_s else torch.nn.Identity()

    def forward(self, student: Outputs, teacher: Outputs) -> torch.Tensor:
        h_s, h_t, mask = self.hidden_pair(student, teacher)
        (lt, ls), = self.pairs
        return distance(self.proj(h_s[ls].float()), h_t[lt].float().detach(), "cosine", mask)


PKD_SCHEMES = ("skip", "last")


def pkd_pairs(n_teacher: int, n_student: int, scheme: str) -> List[List[int]]:
    """``[teacher, student]`` hidden-state indices of Patient KD's layer map.

    Student blocks 1..k-1 (the last one feeds the head and is distilled through the logits)
    against teacher blocks: PKD-skip every (n / k)-th (12 -> 6: blocks 2, 4, 6, 8, 10, the
    authors' 0-based 1, 3, 5, 7, 9); PKD-last the k - 1 blocks before the teacher's last
    (12 -> 6: blocks 7..11).
    """
    k = n_student
    if k < 2 or n_teacher < k:
        raise ConfigError(f"pkd needs a student of 2 to {n_teacher} layers, got {k}")
    if scheme == "skip":
        step = n_teacher // k
        teacher = [step * (i + 1) for i in range(k - 1)]
    else:
        teacher = [n_teacher - k + 1 + i for i in range(k - 1)]
    return [[t, s] for t, s in zip(teacher, range(1, k), strict=True)]


@FEATURE_TERMS.register("pkd")
class PatientKD(HiddenStatePairs):
    """Patient KD's ``L_PT`` (Sun et al., EMNLP 2019; intersun/PKD-for-BERT-Model-Compression
    @9e9e860): the MSE of L2-normalised [CLS] vectors (position 0) of chosen layers.

    ``mean_{b, pairs, d} (h_s[b, 0] / ||h_s[b, 0]|| - h_t[b, 0] / ||h_t[b, 0]||)^2`` (the
    authors' ``F.mse_loss`` over ``[B, pairs, H]``), the teacher detached. ``scheme``
    ``skip`` (default) or ``last`` picks the layer map (``pkd_pairs``), or ``layers`` gives
    ``[teacher, student]`` hidden-state indices. Weight beta = 500 in the paper (grid 10-1000),
    next to ``(1 - alpha) CE + alpha T^2 KL`` with alpha 0.7, T 10. Same hidden width required.
    """

    def __init__(self, scheme: str = "skip", layers: Optional[Sequence[Sequence[int]]] = None,
                 stack: Optional[str] = None) -> None:
        super().__init__(layers or [[-1, -1]], loss="mse", stack=stack)
        self.scheme = check_choice("scheme", scheme, PKD_SCHEMES)
        self.explicit = layers is not None

    def bind(self, teacher: torch.nn.Module, student: torch.nn.Module, stacks: Sequence[str]) -> None:
        stack = self.resolve_stack(stacks)
        if not self.explicit:
            self.pairs = pkd_pairs(layer_count(teacher.config, stack), layer_count(student.config, stack),
                                   self.scheme)
        super().bind(teacher, student, stacks)
        d_t, d_s = _widths(teacher, student)
        if d_t != d_s:
            raise ConfigError(f"pkd needs teacher and student of the same hidden width (teacher {d_t}, "
                              f"student {d_s}): Patient KD compares [CLS] vectors without a projection")

    def forward(self, student: Outputs, teacher: Outputs) -> torch.Tensor:
        h_s, h_t, _ = self.hidden_pair(student, teacher)
        s = torch.stack([h_s[ls][:, 0].float() for _, ls in self.pairs], 1)  # [B, P, H]
        t = torch.stack([h_t[lt][:, 0].float().detach() for lt, _ in self.pairs], 1)
        return F.mse_loss(F.normalize(s, dim=-1), F.normalize(t, dim=-1))


__all__ = ["DistilBertCosine", "HiddenStatePairs", "PatientKD", "pkd_pairs"]
