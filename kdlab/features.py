"""Intermediate-layer objective terms: hidden-state and attention matching.

As in patient KD (Sun et al. 2019) and TinyBERT (Jiao et al. 2020): chosen student layers
are pulled towards chosen teacher layers. Configured like any extra objective term::

    objective.terms.hid: {name: hidden, weight: 1.0, params: {layers: [[2, 1]], loss: mse}}

``layers`` lists ``[teacher_layer, student_layer]`` pairs. For ``hidden``, layer 0 is the
embedding output and layer i the output of block i; for ``attention``, layer i is block
i's attention (0-based). ``stack`` picks ``encoder`` or ``decoder`` in an encoder-decoder
(default: the stack that produces the logits). Only real tokens count (padding masked).

- hidden, ``mse``: ``mean_{tokens, dims} (W h_s + b - h_t)^2``; ``cosine``:
  ``mean_tokens (1 - cos(W h_s + b, h_t))``. ``W`` is a learned ``[H_t, H_s]``
  projection (trained with the student) when the widths differ, the identity otherwise.
- attention (probabilities, per query token): ``mse`` over heads and keys, or ``cosine``
  per head; when the head counts differ, maps are averaged over heads first.

The value is the mean over layer pairs; the teacher side is detached; float32 throughout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional, Sequence

import torch
import torch.nn.functional as F

from kdlab.errors import ConfigError
from kdlab.terms import FEATURE_FIELDS, TERMS, Reads, Term, TermRegistry

if TYPE_CHECKING:  # kdlab.families imports the divergences, whose package registers these terms
    from kdlab.families.base import Family, Outputs

FEATURE_TERMS: TermRegistry = TERMS  # the one registry of objective terms
LOSSES = ("mse", "cosine")


def distance(s: torch.Tensor, t: torch.Tensor, loss: str, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``s, t [B, L, ..., D]`` -> scalar: MSE over every element, or mean (1 - cosine) over
    rows of D, of the positions ``mask [B, L]`` (bool) keeps (all without one).

    The other positions (padding) are replaced by exact zeros, value and gradient, on the
    device: selecting the kept ones (``s[mask]``) would wait for the device."""
    per = (s - t) ** 2 if loss == "mse" else 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)
    if mask is None:
        return per.mean()
    keep = mask.reshape(mask.shape + (1,) * (per.dim() - mask.dim()))
    count = mask.sum().clamp_min(1) * (per.numel() // max(mask.numel(), 1))
    return torch.where(keep, per, 0.0).sum() / count.to(per.dtype)


def layer_count(config: Any, stack: str) -> int:
    """The blocks of ``stack`` in a model config (an encoder-decoder may give its decoder its own count)."""
    if stack == "decoder" and getattr(config, "num_decoder_layers", None) is not None:
        return int(config.num_decoder_layers)
    return int(config.num_hidden_layers)


class LayerMatch(Term):
    """Base of the feature terms: layer pairs, loss, stack; ``bind`` checks them against
    the models once both are built (and creates any projection). A subclass declares the
    one feature it reads: ``reads = Reads.HIDDEN_STATES`` or ``Reads.ATTENTIONS``."""

    reads = Reads.HIDDEN_STATES
    needs_class_distributions = False  # hidden states or attentions, not class distributions

    def __init__(self, layers: Sequence[Sequence[int]], loss: str = "mse", stack: Optional[str] = None) -> None:
        super().__init__()
        pairs = [list(p) for p in layers]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise ConfigError(f"layers={pairs}: give [teacher_layer, student_layer] pairs, e.g. [[2, 1]]")
        if loss not in LOSSES:
            raise ConfigError(f"loss={loss!r}: valid values are {', '.join(LOSSES)}")
        self.pairs: List[List[int]] = pairs
        self.loss, self.stack = loss, stack

    @property
    def kind(self) -> str:
        """The ``Outputs`` field it reads: "hidden_states" | "attentions"."""
        return FEATURE_FIELDS[self.reads]

    def check_setting(self, task: Any, family: Family) -> None:
        self.resolve_stack(family.stacks)

    def compute(self, student: Outputs, teacher: Outputs, labels: Optional[torch.Tensor]) -> torch.Tensor:
        return self(student, teacher)

    def resolve_stack(self, stacks: Sequence[str]) -> str:
        if not stacks:
            raise ConfigError("hidden-state / attention terms need a model family that returns them "
                              "(encoder, seq2seq, causal)")
        stack = self.stack or stacks[-1]
        if stack not in stacks:
            raise ConfigError(f"stack={stack!r}: this family's stacks are {', '.join(stacks)}")
        return stack

    def bind(self, teacher: torch.nn.Module, student: torch.nn.Module, stacks: Sequence[str]) -> None:
        self.stack = self.resolve_stack(stacks)
        last = 0 if self.kind == "hidden_states" else 1  # hidden: 0..n, attention: 0..n-1
        for who, model, col in (("teacher", teacher, 0), ("student", student, 1)):
            n = layer_count(model.config, self.stack)
            bad = [p[col] for p in self.pairs if not 0 <= p[col] <= n - last]
            if bad:
                raise ConfigError(f"layers: {who} layer(s) {bad} out of range [0, {n - last}] for the "
                                  f"{n}-layer {who} {self.stack}")

    def select(self, out: Outputs) -> tuple:
        fields = getattr(out, self.kind)
        if fields is None or out.feature_masks is None:
            raise ValueError(f"the family's forward returned no {self.kind} (Family.features not set)")
        return fields[self.stack], out.feature_masks[self.stack]


@FEATURE_TERMS.register("hidden")
class HiddenStateMatch(LayerMatch):
    reads = Reads.HIDDEN_STATES

    def bind(self, teacher: torch.nn.Module, student: torch.nn.Module, stacks: Sequence[str]) -> None:
        super().bind(teacher, student, stacks)
        d_t, d_s = int(teacher.config.hidden_size), int(student.config.hidden_size)
        self.proj = torch.nn.ModuleList(
            [torch.nn.Linear(d_s, d_t) if d_s != d_t else torch.nn.Identity() for _ in self.pairs])

    def forward(self, student: Outputs, teacher: Outputs) -> torch.Tensor:
        (h_s, mask), (h_t, _) = self.select(student), self.select(teacher)
        values = []
        for (lt, ls), proj in zip(self.pairs, self.proj, strict=True):
            s = proj(h_s[ls].float())  # [B, L, H_t]
            values.append(distance(s, h_t[lt].float().detach(), self.loss, mask))
        return torch.stack(values).mean()


@FEATURE_TERMS.register("attention")
class AttentionMatch(LayerMatch):
    reads = Reads.ATTENTIONS

    def bind(self, teacher: torch.nn.Module, student: torch.nn.Module, stacks: Sequence[str]) -> None:
        super().bind(teacher, student, stacks)
        self.average_heads = teacher.config.num_attention_heads != student.config.num_attention_heads

    def forward(self, student: Outputs, teacher: Outputs) -> torch.Tensor:
        (a_s, mask), (a_t, _) = self.select(student), self.select(teacher)
        values = []
        for lt, ls in self.pairs:
            s = a_s[ls].transpose(1, 2).float()  # [B, heads, L, L] -> [B, L, heads, L]
            t = a_t[lt].transpose(1, 2).float().detach()
            if self.average_heads:
                s, t = s.mean(2), t.mean(2)
            values.append(distance(s, t, self.loss, mask))
        return torch.stack(values).mean()
