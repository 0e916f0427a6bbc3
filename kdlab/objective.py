"""The training objective: a weighted sum of terms declared in config.

    loss = alpha * KD + (1 - alpha) * CE + divergence.weight * divergence + sum(extra terms)

KD is Hinton's soft-target cross-entropy at ``objective.kd.temperature`` (optionally
annealed to 1, see ``kd_temperature``, and scaled by T^2). CE is the model family's loss
on gold labels (cross-entropy, MSE for regression, token cross-entropy on targets).
Every distillation term is a module of ``kdlab.divergences`` (on logits) or of
``kdlab.features`` (hidden states, attentions); all are computed in float32 whatever the
autocast dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

import torch

from kdlab import divergences
from kdlab.config import Config
from kdlab.data import get_task
from kdlab.divergences.sparse import sparse_divergence
from kdlab.errors import ConfigError
from kdlab.families import FAMILIES
from kdlab.families.base import Outputs
from kdlab.features import FEATURE_TERMS, LayerMatch
from kdlab.methods import LABEL_TERMS

NO_DIVERGENCE = "none"
# Names of logged parts that are not terms: a term may not take them.
RESERVED = {"ce": "the cross-entropy on labels", "loss": "the weighted sum"}
# objective.kd.anneal: the KD temperature schedule (see kd_temperature)
ANNEAL = ("none", "epoch", "step")


@dataclass
class Term:
    name: str  # the key under which it is logged; unique in an objective
    weight: float
    module: torch.nn.Module
    key: str = ""  # the config key it comes from, for messages ("divergence", "objective.alpha", ...)


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


class Objective(torch.nn.Module):
    """Cross-entropy on labels plus weighted distillation terms."""

    def __init__(
        self,
        ce_weight: float,
        terms: List[Term],
        kd_anneal: str = "none",
    ) -> None:
        """``kd_anneal`` (``ANNEAL``) schedules the temperature of the term named "kd" (the
        alpha term), from its temperature at build time; see ``kd_temperature``."""
        super().__init__()
        if kd_anneal not in ANNEAL:
            raise ValueError(f"kd_anneal={kd_anneal!r}: one of {', '.join(ANNEAL)}")
        check_unique_names(terms)
        self.ce_weight = ce_weight
        self.terms = terms
        self._modules_list = torch.nn.ModuleList([t.module for t in terms])
        self.kd_anneal = kd_anneal
        kd = [t.module for t in terms if t.name == "kd"]
        self._annealed = kd[0] if kd and kd_anneal != "none" else None
        self._t0 = self._annealed.temperature if self._annealed is not None else 1.0

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

    def set_progress(self, fraction: float, epoch: int = 0, epochs: int = 1) -> None:
        """Where training is: ``fraction`` of the optimiser steps done, in the 0-based data
        epoch ``epoch`` of ``epochs`` (a partial last one counted). Sets the annealed KD
        temperature (``kd_temperature``); terms with a schedule of their own (DKD's
        warm-up) get ``set_progress(fraction)``."""
        for term in self.terms:
            if hasattr(term.module, "set_progress"):
                term.module.set_progress(fraction)
        if self._annealed is not None:
            self._annealed.temperature = kd_temperature(self._t0, self.kd_anneal, fraction, epoch, epochs)

    def forward(
        self,
        student: Outputs,  # logits [B, C] or [B, T, V]; mask None or [B, T]
        supervised: torch.Tensor,  # the family's loss on gold labels (float32 scalar)
        teacher: Optional[Outputs] = None,
        labels: Optional[torch.Tensor] = None,  # gold labels [B], for terms with needs_labels
        has_label: Optional[torch.Tensor] = None,  # [B] bool: False on transfer examples (no gold label)
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """The weighted sum and each term. ``supervised`` is already averaged over the
        labelled examples (the family reads ``has_label``); terms that read gold labels
        average over the rows where ``has_label`` is True (their row mask); every other
        term sees the whole batch."""
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
                    value = self._term(term.module, student, teacher, z_s, z_t, labels, has_label)
                    parts[term.name] = value
                    total = total + term.weight * value
        parts["loss"] = total
        return total, parts

    @staticmethod
    def _term(module: torch.nn.Module, student: Outputs, teacher: Outputs, z_s: torch.Tensor,
              z_t: torch.Tensor, labels: Optional[torch.Tensor], has_label: Optional[torch.Tensor]) -> torch.Tensor:
        if isinstance(module, LayerMatch):
            return module(student, teacher)
        if teacher.sparse is not None:  # a top-k token cache: see kdlab.divergences.sparse
            return sparse_divergence(module, z_s, teacher.sparse, mask=student.mask)
        kw = {}
        mask = student.mask
        if getattr(module, "needs_labels", False):
            if labels is None:
                raise ValueError(f"{type(module).__name__} needs gold labels; the objective got none")
            if has_label is not None:  # class logits [B, C] (label terms are encoder-only)
                # masked on the device, not selected: selecting rows waits for the device
                mask = has_label if mask is None else mask & has_label
                labels = torch.where(has_label, labels, 0)  # a transfer row's label may be anything
            kw["labels"] = labels
        if getattr(module, "needs_teacher_mask", False):  # each model's own answer span (ULD)
            kw["teacher_mask"] = teacher.mask
        return module(z_s, z_t, mask=mask, **kw)


def check_unique_names(terms: Sequence[Term]) -> None:
    """Every term is logged under its name, and the logged loss is the weighted sum of the
    logged parts: two terms of one name would overwrite each other's part (and share the
    KD temperature schedule), so a repeated or reserved name is refused."""
    seen: Dict[str, Term] = {}
    for term in terms:
        where = f" ({term.key})" if term.key else ""
        if term.name in RESERVED:
            raise ConfigError(f"a term{where} is named {term.name!r}, the name of {RESERVED[term.name]} "
                              "in the logs; give it another name")
        if term.name in seen:
            first = seen[term.name]
            raise ConfigError(_duplicate_message(term.name, first.key, term.key))
        seen[term.name] = term


def _duplicate_message(name: str, first: str, second: str) -> str:
    if {first, second} == {"objective.alpha", "divergence"}:
        return (f"divergence={name} with objective.alpha > 0 makes two terms named {name!r} (the alpha "
                "KD term and the divergence), whose logged values would overwrite each other. For KD "
                "alone set divergence=none (its temperature is objective.kd.temperature); to weight "
                "the divergence freely set objective.alpha=0 and objective.ce_weight")
    return (f"two terms named {name!r} ({first or '?'} and {second or '?'}); their logged values would "
            "overwrite each other. Rename one of them")


def needs_class_distributions(module: torch.nn.Module) -> bool:
    """Whether a term compares distributions over classes (softmax of the logits), which
    are all 1 on a single output: such a term is identically 0 on a regression task.

    Logit terms declare it as the class attribute ``needs_class_distributions`` (True on
    ``LogitDivergence``, the label-aware terms and ULD; False on ``mse``). Feature terms
    read hidden states or attentions: False. A logit term that declares nothing (one
    registered from outside kdlab's base classes) counts as True, so that it is refused on
    a single output rather than silently trained as 0.
    """
    if isinstance(module, LayerMatch):
        return False
    return bool(getattr(module, "needs_class_distributions", True))


def check_single_output(terms: Sequence[Term], task: Any, family: str) -> None:
    """Refuse distillation terms that are identically 0 on the task's outputs: on a
    regression task the encoder family has one output per example, so every term that
    compares class distributions gives 0 and only the label loss would train."""
    if family != "encoder" or not task.is_regression:
        return
    zero = [t for t in terms if t.weight > 0 and needs_class_distributions(t.module)]
    if zero:
        names = ", ".join(f"{t.name} ({t.key})" if t.key else t.name for t in zero)
        raise ConfigError(
            f"dataset={task.name} is a regression task (one output per example): {names} compare "
            "class distributions, identically 0 on a single output, so the student would learn from "
            "the labels only. Use divergence=mse objective.alpha=0 (logit MSE, the regression KD "
            "term of the SinKD code)"
        )


def anneal_schedule(value: Any) -> str:
    """``objective.kd.anneal`` as one of ``ANNEAL``. ``false`` (the former boolean) is
    ``none``; ``true`` is refused, as it meant the per-step schedule while SinKD's
    published one is per epoch."""
    text = str(value)
    if text.lower() == "false":
        return "none"
    if text.lower() == "true":
        raise ConfigError("objective.kd.anneal=true: say which schedule, 'epoch' (SinKD's published "
                          "kd_anneal: the temperature drops once per epoch and the last epoch runs at 1) "
                          "or 'step' (lowered a little every step, reaching 1 at the end); none: no annealing")
    if text not in ANNEAL:
        raise ConfigError(f"objective.kd.anneal={text!r}: valid values are {', '.join(ANNEAL)}")
    return text


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
    anneal = anneal_schedule(obj.kd.anneal)
    terms: List[Term] = []
    if obj.alpha > 0:
        kd = divergences.get("kd", temperature=obj.kd.temperature, t2=obj.kd.t2)
        terms.append(Term("kd", obj.alpha, kd, "objective.alpha"))
    div = cfg.divergence
    if div.name != NO_DIVERGENCE:
        check_weight("divergence.weight", div.weight)
        terms.append(Term(div.name, div.weight, _build("divergence", div.name, dict(div.params)), "divergence"))
    for key, term in obj.terms.items():
        check_weight(f"objective.terms.{key}.weight", term.weight)
        terms.append(Term(key, term.weight, _build(f"objective.terms.{key}", term.name, dict(term.params)),
                          f"objective.terms.{key}"))
        if isinstance(terms[-1].module, LayerMatch):
            try:
                terms[-1].module.resolve_stack(FAMILIES.get(cfg.teacher.family).stacks)
            except ConfigError as e:
                raise ConfigError(f"objective.terms.{key}: {e}") from None
    check_unique_names(terms)
    task = get_task(cfg.dataset.name)
    for term in terms:
        if hasattr(term.module, "check_setting"):  # the method's preconditions on task and family
            try:
                term.module.check_setting(task, cfg.teacher.family)
            except ConfigError as e:
                raise ConfigError(f"{term.key} ({term.name}): {e}") from None
        if hasattr(term.module, "set_training_epochs"):
            term.module.set_training_epochs(cfg.trainer.epochs)
    check_single_output(terms, task, cfg.teacher.family)
    ce_weight = 1.0 - obj.alpha if obj.ce_weight is None else obj.ce_weight
    check_weight("objective.ce_weight", ce_weight)
    # the schedule is the alpha term's: with objective.alpha=0 there is nothing to anneal
    return Objective(ce_weight, terms, kd_anneal=anneal if obj.alpha > 0 else "none")


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
