"""The training objective: a weighted sum of terms declared in config.

    loss = alpha * KD + (1 - alpha) * CE + divergence.weight * divergence + sum(extra terms)

KD is Hinton's soft-target cross-entropy at ``objective.kd.temperature`` (optionally
annealed to 1 and scaled by T^2). CE is the model family's loss on gold labels
(cross-entropy, MSE for regression, token cross-entropy on targets).
Every distillation term is a module of ``kdlab.divergences`` (on logits) or of
``kdlab.features`` (hidden states, attentions); all are computed in float32 whatever the
autocast dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import torch

from kdlab import divergences
from kdlab.config import Config
from kdlab.data import get_task
from kdlab.errors import ConfigError
from kdlab.families import FAMILIES
from kdlab.families.base import Outputs
from kdlab.features import FEATURE_TERMS, LayerMatch
from kdlab.methods import LABEL_TERMS, labelled, layers, ted  # noqa: F401  (registration)

NO_DIVERGENCE = "none"


@dataclass
class Term:
    name: str  # the key under which it is logged
    weight: float
    module: torch.nn.Module


class Objective(torch.nn.Module):
    """Cross-entropy on labels plus weighted distillation terms."""

    def __init__(
        self,
        ce_weight: float,
        terms: List[Term],
        kd_anneal_from: Optional[float] = None,
    ) -> None:
        super().__init__()
        self.ce_weight = ce_weight
        self.terms = terms
        self._modules_list = torch.nn.ModuleList([t.module for t in terms])
        self.kd_anneal_from = kd_anneal_from

    @property
    def needs_teacher(self) -> bool:
        return any(t.weight > 0 for t in self.terms)

    @property
    def features(self) -> FrozenSet[str]:
        """What the feature terms read from ``Outputs`` besides logits."""
        return frozenset(t.module.kind for t in self.terms if isinstance(t.module, LayerMatch) and t.weight > 0)

    def shared_tokenizer_terms(self, family: str) -> List[str]:
        """The weighted terms that need teacher and student to share a tokenizer: feature
        terms (they match token positions) and, in the token families, every logit term but
        those declaring ``cross_tokenizer`` (ULD), as they compare distributions over one
        vocabulary. Encoder logits are over the task's classes, whatever the tokenizers."""
        out = []
        for t in self.terms:
            if t.weight <= 0:
                continue
            if isinstance(t.module, LayerMatch) or (family != "encoder" and not getattr(t.module, "cross_tokenizer", False)):
                out.append(t.name)
        return out

    def bind(self, teacher: torch.nn.Module, student: torch.nn.Module, stacks: Sequence[str]) -> None:
        """Check feature terms against the models and create their projections (trained
        with the student: the trainer optimises ``self.parameters()`` too)."""
        for t in self.terms:
            if hasattr(t.module, "bind"):  # feature terms; terms reading the student's embeddings
                t.module.bind(teacher, student, stacks)

    def set_progress(self, fraction: float) -> None:
        """SinKD's ``kd_anneal``: the KD temperature goes linearly from T to 1 over training.
        Terms with a schedule of their own (DKD's warm-up) get ``set_progress(fraction)``."""
        for term in self.terms:
            if hasattr(term.module, "set_progress"):
                term.module.set_progress(fraction)
        if self.kd_anneal_from is None:
            return
        t0 = self.kd_anneal_from
        for term in self.terms:
            if term.name == "kd":
                term.module.temperature = t0 - (t0 - 1.0) * min(max(fraction, 0.0), 1.0)

    def forward(
        self,
        student: Outputs,  # logits [B, C] or [B, T, V]; mask None or [B, T]
        supervised: torch.Tensor,  # the family's loss on gold labels (float32 scalar)
        teacher: Optional[Outputs] = None,
        labels: Optional[torch.Tensor] = None,  # gold labels [B], for terms with needs_labels
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        z_s = student.logits.float()
        parts: Dict[str, torch.Tensor] = {}
        total = z_s.new_zeros(())
        if self.ce_weight > 0:
            parts["ce"] = supervised
            total = total + self.ce_weight * supervised
        if self.needs_teacher:
            if teacher is None:
                raise ValueError("the objective has distillation terms but no teacher outputs")
            z_t = teacher.logits.float().detach()
            for term in self.terms:
                if term.weight > 0:
                    value = self._term(term.module, student, teacher, z_s, z_t, labels)
                    parts[term.name] = value
                    total = total + term.weight * value
        parts["loss"] = total
        return total, parts

    @staticmethod
    def _term(module: torch.nn.Module, student: Outputs, teacher: Outputs, z_s: torch.Tensor,
              z_t: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
        if isinstance(module, LayerMatch):
            return module(student, teacher)
        kw = {}
        if getattr(module, "needs_labels", False):
            if labels is None:
                raise ValueError(f"{type(module).__name__} needs gold labels; the objective got none")
            kw["labels"] = labels
        if getattr(module, "needs_teacher_mask", False):  # each model's own answer span (ULD)
            kw["teacher_mask"] = teacher.mask
        return module(z_s, z_t, mask=student.mask, **kw)


def check_weight(key: str, value: float, upper: Optional[float] = None) -> None:
    if value < 0 or (upper is not None and value > upper):
        rng = f"in [0, {upper}]" if upper is not None else ">= 0"
        raise ConfigError(f"{key}={value}: must be {rng}")


def build_objective(cfg: Config) -> Objective:
    """Build the distillation objective of ``cfg`` (before any model is loaded)."""
    obj = cfg.objective
    check_weight("objective.alpha", obj.alpha, upper=1.0)
    if obj.kd.temperature <= 0:
        raise ConfigError(f"objective.kd.temperature={obj.kd.temperature}: must be > 0")
    terms: List[Term] = []
    if obj.alpha > 0:
        kd = divergences.get("kd", temperature=obj.kd.temperature, t2=obj.kd.t2)
        terms.append(Term("kd", obj.alpha, kd))
    div = cfg.divergence
    if div.name != NO_DIVERGENCE:
        check_weight("divergence.weight", div.weight)
        terms.append(Term(div.name, div.weight, _build("divergence", div.name, dict(div.params))))
    for key, term in obj.terms.items():
        check_weight(f"objective.terms.{key}.weight", term.weight)
        if key in {t.name for t in terms} or key == "ce":
            raise ConfigError(f"objective.terms.{key}: the name {key!r} is already used by another term")
        terms.append(Term(key, term.weight, _build(f"objective.terms.{key}", term.name, dict(term.params))))
        if isinstance(terms[-1].module, LayerMatch):
            try:
                terms[-1].module.resolve_stack(FAMILIES.get(cfg.teacher.family).stacks)
            except ConfigError as e:
                raise ConfigError(f"objective.terms.{key}: {e}") from None
    for term in terms:
        key = "divergence" if term.name == div.name and div.name != NO_DIVERGENCE else f"objective.terms.{term.name}"
        if hasattr(term.module, "check_setting"):  # the method's preconditions on task and family
            try:
                term.module.check_setting(get_task(cfg.dataset.name), cfg.teacher.family)
            except ConfigError as e:
                raise ConfigError(f"{key} ({term.name}): {e}") from None
        if hasattr(term.module, "set_training_epochs"):
            term.module.set_training_epochs(cfg.trainer.epochs)
    anneal = obj.kd.temperature if obj.kd.anneal else None
    ce_weight = 1.0 - obj.alpha if obj.ce_weight is None else obj.ce_weight
    check_weight("objective.ce_weight", ce_weight)
    return Objective(ce_weight, terms, kd_anneal_from=anneal)


def fine_tune_objective() -> Objective:
    """Plain supervised training: the family's loss on gold labels only."""
    return Objective(1.0, [])


def _build(key: str, name: str, params: dict) -> torch.nn.Module:
    try:
        if key.startswith("objective.terms.") and name in FEATURE_TERMS:
            return FEATURE_TERMS.build(name, **params)
        if name in LABEL_TERMS:
            return LABEL_TERMS.build(name, **params)
        return divergences.get(name, **params)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None
