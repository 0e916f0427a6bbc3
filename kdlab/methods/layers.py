"""Intermediate-layer terms of DistilBERT and Patient KD.

Both read hidden states ``[B, L, H]`` (index 0 the embeddings, i the output of block i).
The token families return them in ``Outputs``; the encoder family does not, so for it a
``HiddenStateTap`` records them from each model's own forward pass (hooks that ask the
model for ``output_hidden_states`` and keep them with the attention mask).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from kdlab.divergences.base import check_choice
from kdlab.errors import ConfigError
from kdlab.families.base import Outputs
from kdlab.features import FEATURE_TERMS, LayerMatch, _distance, _layer_count

TAP_STACK = "encoder"


class HiddenStateTap:
    """Records the hidden states and attention mask of a Hugging Face model's last forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.hidden: Optional[Tuple[torch.Tensor, ...]] = None
        self.mask: Optional[torch.Tensor] = None
        self.handles = [model.register_forward_pre_hook(self._before, with_kwargs=True),
                        model.register_forward_hook(self._after, with_kwargs=True)]

    def _before(self, module: Any, args: tuple, kwargs: dict) -> tuple:
        self.mask = kwargs.get("attention_mask")
        return args, {**kwargs, "output_hidden_states": True}

    def _after(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        self.hidden = output.hidden_states

    def read(self) -> Tuple[Tuple[torch.Tensor, ...], torch.Tensor]:
        if self.hidden is None:
            raise ValueError("no hidden states recorded: the model has not run forward yet")
        h = self.hidden
        mask = self.mask.bool() if self.mask is not None else torch.ones(h[0].shape[:2], dtype=torch.bool,
                                                                         device=h[0].device)
        return h, mask

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class TappedLayerMatch(LayerMatch):
    """A hidden-state term that also serves the encoder family (through ``HiddenStateTap``)."""

    kind = "hidden_states"

    def __init__(self, layers: Sequence[Sequence[int]], loss: str = "mse", stack: Optional[str] = None) -> None:
        super().__init__(layers, loss, stack)
        self._taps: List[HiddenStateTap] = []  # a plain list: not submodules, not in the state dict

    def resolve_stack(self, stacks: Sequence[str]) -> str:
        return super().resolve_stack(stacks) if stacks else TAP_STACK

    def bind_taps(self, teacher: torch.nn.Module, student: torch.nn.Module, stacks: Sequence[str]) -> None:
        self.release()
        self._taps = [] if stacks else [HiddenStateTap(teacher), HiddenStateTap(student)]

    def release(self) -> None:
        """Remove the hooks from the models."""
        for tap in self._taps:
            tap.remove()
        self._taps = []

    def select(self, out: Outputs) -> tuple:
        if not self._taps:
            return super().select(out)
        raise RuntimeError("tapped terms read the taps (hidden_pair), not Outputs")

    def hidden_pair(self, student: Outputs, teacher: Outputs) -> Tuple[tuple, tuple, torch.Tensor]:
        """``(student hidden states, teacher hidden states, mask [B, L])``."""
        if self._taps:
            (h_t, _), (h_s, mask) = self._taps[0].read(), self._taps[1].read()
            return h_s, h_t, mask
        (h_s, mask), (h_t, _) = super().select(student), super().select(teacher)
        return h_s, h_t, mask


def _widths(teacher: torch.nn.Module, student: torch.nn.Module) -> Tuple[int, int]:
    return int(teacher.config.hidden_size), int(student.config.hidden_size)


@FEATURE_TERMS.register("distilbert_cos")
class DistilBertCosine(TappedLayerMatch):
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
        self.pairs = [[_layer_count(teacher.config, stack), _layer_count(student.config, stack)]]
        super().bind(teacher, student, stacks)
        self.bind_taps(teacher, student, stacks)
        d_t, d_s = _widths(teacher, student)
        if d_t != d_s and not self.projection:
            raise ConfigError(f"distilbert_cos needs teacher and student of the same hidden width (teacher "
                              f"{d_t}, student {d_s}); DistilBERT has no projection (params.projection=true "
                              "learns one, an extension)")
        self.proj = torch.nn.Linear(d_s, d_t) if d_t != d_s else torch.nn.Identity()

    def forward(self, student: Outputs, teacher: Outputs) -> torch.Tensor:
        h_s, h_t, mask = self.hidden_pair(student, teacher)
        (lt, ls), = self.pairs
        return _distance(self.proj(h_s[ls][mask].float()), h_t[lt][mask].float().detach(), "cosine")


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
class PatientKD(TappedLayerMatch):
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
            self.pairs = pkd_pairs(_layer_count(teacher.config, stack), _layer_count(student.config, stack),
                                   self.scheme)
        super().bind(teacher, student, stacks)
        self.bind_taps(teacher, student, stacks)
        d_t, d_s = _widths(teacher, student)
        if d_t != d_s:
            raise ConfigError(f"pkd needs teacher and student of the same hidden width (teacher {d_t}, "
                              f"student {d_s}): Patient KD compares [CLS] vectors without a projection")

    def forward(self, student: Outputs, teacher: Outputs) -> torch.Tensor:
        h_s, h_t, _ = self.hidden_pair(student, teacher)
        s = torch.stack([h_s[ls][:, 0].float() for _, ls in self.pairs], 1)  # [B, P, H]
        t = torch.stack([h_t[lt][:, 0].float().detach() for lt, _ in self.pairs], 1)
        return F.mse_loss(F.normalize(s, dim=-1), F.normalize(t, dim=-1))


__all__ = ["DistilBertCosine", "HiddenStateTap", "PatientKD", "pkd_pairs"]
