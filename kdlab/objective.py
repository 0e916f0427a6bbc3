"""The training objective: a weighted sum of terms declared in config.

    loss = alpha * KD + (1 - alpha) * CE + divergence.weight * divergence + sum(extra terms)

KD is Hinton's soft-target cross-entropy at ``objective.kd.temperature`` (optionally
annealed to 1, see ``kd_temperature``, and scaled by T^2). CE is the model family's loss
on gold labels (cross-entropy, MSE for regression, token cross-entropy on targets).
Every distillation term is a ``kdlab.terms.Term`` registered in ``kdlab.terms.TERMS``: the
objective gives each term what it declares it reads and nothing else, asks it for its
preconditions, schedule and pre-stages; all are computed in float32 whatever the autocast
dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

import torch

from kdlab import terms as term_protocol
from kdlab.config import Config
from kdlab.data import get_task
from kdlab.divergences.kl import ANNEAL, kd_temperature
from kdlab.errors import ConfigError
from kdlab.families import get_family
from kdlab.families.base import Family, Outputs
from kdlab.terms import PreStage, Reads, feature_fields

NO_DIVERGENCE = "none"
# Names of logged parts that are not terms: a term may not take them.
RESERVED = {"ce": "the cross-entropy on labels", "loss": "the weighted sum"}

__all__ = ["ANNEAL", "NO_DIVERGENCE", "Objective", "Term", "WeightedTerm", "build_objective", "kd_temperature"]


@dataclass
class WeightedTerm:
    name: str  # the key under which it is logged; unique in an objective
    weight: float
    module: torch.nn.Module  # a kdlab.terms.Term (a plain module is wrapped, see kdlab.terms.as_term)
    key: str = ""  # the config key it comes from, for messages ("divergence", "objective.alpha", ...)

    def __post_init__(self) -> None:
        self.module = term_protocol.as_term(self.module)


Term = WeightedTerm  # the name the objective's entries had before kdlab.terms.Term


class Objective(torch.nn.Module):
    """Cross-entropy on labels plus weighted distillation terms."""

    def __init__(self, ce_weight: float, terms: List[WeightedTerm]) -> None:
        super().__init__()
        check_unique_names(terms)
        self.ce_weight = ce_weight
        self.terms = terms
        self._modules_list = torch.nn.ModuleList([t.module for t in terms])

    @property
    def needs_teacher(self) -> bool:
        return any(t.weight > 0 for t in self.terms)

    def weighted(self) -> List[WeightedTerm]:
        return [t for t in self.terms if t.weight > 0]

    @property
    def names(self) -> List[str]:
        """The weighted terms' names, what the student learns from (``results.json`` ``terms``)."""
        return [t.name for t in self.weighted()]

    @property
    def features(self) -> FrozenSet[str]:
        """What the weighted terms read from ``Outputs`` besides logits (``Family.features``)."""
        return frozenset().union(*(feature_fields(t.module.reads) for t in self.weighted()))

    def shared_tokenizer_terms(self, family: Family) -> List[str]:
        """The weighted terms that need teacher and student to share a tokenizer: all but
        those declaring ``cross_tokenizer`` (ULD) and, when the family's logits are over
        the task's classes (``Family.class_logits``), the terms that read no features
        (features match token positions; class logits are the same whatever the tokenizers)."""
        out = []
        for t in self.weighted():
            tokenizer_free = t.module.cross_tokenizer or (
                family.class_logits and not feature_fields(t.module.reads))
            if not tokenizer_free:
                out.append(t.name)
        return out

    def bind(self, teacher: torch.nn.Module, student: torch.nn.Module, stacks: Sequence[str]) -> None:
        """Bind every term to the models: each checks them and creates its trainable
        parameters (trained with the student: the trainer optimises ``self.parameters()`` too)."""
        for t in self.terms:
            t.module.bind(teacher, student, stacks)

    def set_progress(self, fraction: float, epoch: int = 0, epochs: int = 1) -> None:
        """Where training is: ``fraction`` of the optimiser steps done, in the 0-based data
        epoch ``epoch`` of ``epochs`` (a partial last one counted); every term's schedule
        (KD's annealed temperature, DKD's warm-up) follows it."""
        for t in self.terms:
            t.module.set_progress(fraction, epoch, epochs)

    def pre_stages(self) -> List[PreStage]:
        """The stages the weighted terms train before distillation, in term order."""
        return [stage for t in self.weighted() for stage in t.module.pre_stages()]

    def forward(
        self,
        student: Outputs,  # logits [B, C] or [B, T, V]; mask None or [B, T]
        supervised: torch.Tensor,  # the family's loss on gold labels (float32 scalar)
        teacher: Optional[Outputs] = None,
        labels: Optional[torch.Tensor] = None,  # gold labels [B], for terms reading Reads.LABELS
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
            for term in self.weighted():
                value = term_value(term.module, replace(student, logits=z_s), replace(teacher, logits=z_t),
                               labels, has_label)
                parts[term.name] = value
                total = total + term.weight * value
        parts["loss"] = total
        return total, parts


def view(out: Outputs, reads: Reads, logits: Reads, mask: Reads) -> Outputs:
    """``out`` with only what ``reads`` declares (``logits`` and ``mask``: the flags of this
    side's logits and mask); every other field is None."""
    return Outputs(
        logits=out.logits if logits in reads else None,
        mask=out.mask if mask in reads else None,
        hidden_states=out.hidden_states if Reads.HIDDEN_STATES in reads else None,
        attentions=out.attentions if Reads.ATTENTIONS in reads else None,
        feature_masks=out.feature_masks if feature_fields(reads) else None,
        sparse=out.sparse if logits in reads else None,
    )


def term_value(module: term_protocol.Term, student: Outputs, teacher: Outputs, labels: Optional[torch.Tensor],
           has_label: Optional[torch.Tensor]) -> torch.Tensor:
    """One term's value from the views of both models that it declared it reads (the
    objective's own call, per weighted term)."""
    reads = module.reads
    s = view(student, reads, Reads.STUDENT_LOGITS, Reads.TOKEN_MASK)
    t = view(teacher, reads, Reads.TEACHER_LOGITS, Reads.TEACHER_MASK)
    if Reads.LABELS not in reads:
        return module.compute(s, t, None)
    if labels is None:
        raise ValueError(f"{type(module).__name__} needs gold labels; the objective got none")
    if has_label is not None:  # class logits [B, C] (label terms need Family.class_logits)
        # rows masked on the device, not selected: selecting rows waits for the device
        s = replace(s, mask=has_label if s.mask is None else s.mask & has_label)
        labels = torch.where(has_label, labels, 0)  # a transfer row's label may be anything
    return module.compute(s, t, labels)


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
    are all 1 on a single output: such a term is identically 0 on a regression task. Each
    term declares it (``kdlab.terms.Term.needs_class_distributions``); a plain module counts
    as True (``kdlab.terms.Adapted``), so that it is refused on a single output rather than
    silently trained as 0."""
    return term_protocol.as_term(module).needs_class_distributions


def check_single_output(terms: Sequence[WeightedTerm], task: Any, family: Family) -> None:
    """Refuse distillation terms that are identically 0 on the task's outputs: on a
    regression task a family with class logits has one output per example, so every term
    that compares class distributions gives 0 and only the label loss would train."""
    if not family.class_logits or not task.is_regression:
        return
    zero = [t for t in terms if t.weight > 0 and t.module.needs_class_distributions]
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
    terms: List[WeightedTerm] = []
    if obj.alpha > 0:  # objective.kd.anneal schedules this term only
        kd = term_protocol.build("kd", temperature=obj.kd.temperature, t2=obj.kd.t2, anneal=anneal)
        terms.append(WeightedTerm("kd", obj.alpha, kd, "objective.alpha"))
    div = cfg.divergence
    if div.name != NO_DIVERGENCE:
        check_weight("divergence.weight", div.weight)
        terms.append(WeightedTerm(div.name, div.weight, _build("divergence", div.name, dict(div.params)),
                                  "divergence"))
    for key, term in obj.terms.items():
        where = f"objective.terms.{key}"
        check_weight(f"{where}.weight", term.weight)
        terms.append(WeightedTerm(key, term.weight, _build(where, term.name, dict(term.params)), where))
    check_unique_names(terms)
    task, family = get_task(cfg.dataset.name), get_family(cfg.teacher.family)
    for term in terms:
        try:  # the term's preconditions on the task and the family's capabilities
            term.module.check_setting(task, family)
        except ConfigError as e:
            raise ConfigError(f"{term.key} ({term.name}): {e}") from None
        term.module.set_training_epochs(cfg.trainer.epochs)
    check_single_output(terms, task, family)
    ce_weight = 1.0 - obj.alpha if obj.ce_weight is None else obj.ce_weight
    check_weight("objective.ce_weight", ce_weight)
    return Objective(ce_weight, terms)


def fine_tune_objective() -> Objective:
    """Plain supervised training: the family's loss on gold labels only."""
    return Objective(1.0, [])


def _build(key: str, name: str, params: dict) -> term_protocol.Term:
    try:
        return term_protocol.build(name, **params)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None
