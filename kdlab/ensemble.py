"""Several teachers in one run: ``teachers`` and ``objective.teachers.combine``.

``teachers`` maps names to full teacher nodes, each with a ``weight``; empty (the default),
the run has the one ``teacher`` and nothing here is used. With entries, the run's teachers
are the entries in their order, and the first one is *the* teacher: ``teacher`` must
describe it (the same node without ``weight``; anything else is refused), so everything
that reads ``teacher`` (the family, ``student=from_teacher``, the ``teacher`` row of
``results.json``, the transfer draws) reads the first entry.

Weights ``w_i`` are >= 0, not all 0, and normalised to sum to 1. With the teachers'
logits ``z_i`` on an example, ``objective.teachers.combine`` makes one objective of them:

- ``mixture``: the teachers' logits become ``log p_mix`` with
  ``p_mix = sum_i w_i softmax(z_i)`` (temperature 1), and every term reads ``log p_mix``
  as the teacher's logits. A term at temperature T therefore sees
  ``softmax(log p_mix / T) = p_mix^(1/T) / sum_c p_mix^(1/T)``: the mixture sharpened or
  flattened, not the mixture of the tempered teachers. Refused where the logits themselves
  are compared (``mse``) and on regression tasks (one output: no distribution to mix).
- ``sum``: ``sum_i w_i * objective(student, teacher_i)``; every distillation term is
  evaluated against each teacher, and the cross-entropy on labels, the same in each, adds
  up to itself (the weights sum to 1): counted once. Logged parts are the same weighted
  sums.

Several teachers run the encoder family (class logits) with cached teacher outputs
(``trainer.cache_teacher_outputs=true``); feature terms, TED's filters and the online
phase, which bind to one teacher's model, are refused. The run's phases with several
teachers (their outputs, their dev rows) are in ``kdlab.ensemble_phases``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import OmegaConf

from kdlab.choices import Combine
from kdlab.data import get_task
from kdlab.errors import ConfigError
from kdlab.families import get_family
from kdlab.families.base import Family, Outputs
from kdlab.models import TEACHERS, Loaded
from kdlab.objective import Objective, needs_class_distributions
from kdlab.teacher_outputs import CachedTeacher
from kdlab.terms import PreStage


@dataclass(frozen=True)
class Member:
    """One teacher of ``teachers``: its name, node and normalised weight."""

    name: str
    cfg: Any  # the ``teachers.<name>`` node (a TeacherEntryConfig)
    weight: float


@dataclass
class Fitted:
    """A member of ``teachers`` and its teacher, fine-tuned (cached on its own key)."""

    member: Member
    teacher: Loaded


def enabled(cfg: Any) -> bool:
    return len(cfg.teachers) > 0


def members(cfg: Any) -> List[Member]:
    """The entries of ``teachers`` in order, weights normalised to sum to 1."""
    raw = {name: float(node.weight) for name, node in cfg.teachers.items()}
    for name, w in raw.items():
        if not w >= 0 or math.isinf(w):
            raise ConfigError(f"teachers.{name}.weight={w}: must be a finite number >= 0")
    total = sum(raw.values())
    if total <= 0:
        raise ConfigError(f"teachers: every weight is 0 ({', '.join(raw)}); give at least one teacher a "
                          "weight > 0 (weights are normalised to sum to 1)")
    return [Member(name, cfg.teachers[name], w / total) for name, w in raw.items()]


def _flat(node: Any, prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in node.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, f"{key}.") if isinstance(v, dict) and v else {key: v})
    return out


def check(cfg: Any) -> None:
    """Config-time refusals of ``teachers`` (before any data or model is read); a no-op
    without entries. Each entry's ``finetune`` ranges are checked by ``kdlab.validation``."""
    if not enabled(cfg):
        return
    ms = members(cfg)
    first = ms[0]
    entry = {k: v for k, v in _flat(OmegaConf.to_container(first.cfg, resolve=True)).items() if k != "weight"}
    teacher = _flat(OmegaConf.to_container(cfg.teacher, resolve=True))
    for key in sorted(set(entry) | set(teacher)):
        if entry.get(key) != teacher.get(key):
            raise ConfigError(
                f"teacher.{key}={teacher.get(key)!r} but teachers.{first.name}.{key}={entry.get(key)!r}: with "
                f"teachers set, the first entry ({first.name}) is the run's teacher and teacher must describe it; "
                f"set teacher.{key} to the entry's value (or change the entry)")
    for m in ms:
        TEACHERS.get(m.cfg.name)
        if not get_family(m.cfg.family).class_logits:
            raise ConfigError(f"teachers.{m.name}.family={m.cfg.family}: several teachers are supported in the "
                              "encoder family only (class logits); use one teacher for the token families")
    if cfg.online.method != "none":
        raise ConfigError(f"online.method={cfg.online.method} trains one teacher with the student; "
                          "it takes no teachers (leave teachers empty)")
    if not cfg.trainer.cache_teacher_outputs:
        raise ConfigError("trainer.cache_teacher_outputs=false with several teachers: their outputs are combined "
                          "from the cached ones; set trainer.cache_teacher_outputs=true")


def check_objective(cfg: Any, objective: Objective) -> None:
    """Refuse terms that several teachers cannot serve (before any model is loaded)."""
    if not enabled(cfg):
        return
    bound = sorted(objective.features) + [stage.name for stage in objective.pre_stages()]
    if bound:
        raise ConfigError(f"several teachers: the objective has terms bound to one teacher's model "
                          f"({', '.join(bound)}); use logit terms only, or one teacher")
    if cfg.objective.teachers.combine != Combine.mixture:
        return
    if get_task(cfg.dataset.name).is_regression:
        raise ConfigError(f"objective.teachers.combine=mixture: dataset={cfg.dataset.name} is a regression task "
                          "(one output, no class distribution to mix); use objective.teachers.combine=sum")
    raw = [t.name for t in objective.terms if t.weight > 0 and not needs_class_distributions(t.module)]
    if raw:
        raise ConfigError(f"objective.teachers.combine=mixture feeds log-probabilities of the mixture to every "
                          f"term, but {', '.join(raw)} compare(s) raw logits; use objective.teachers.combine=sum")


def mixture_logits(logits: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``log sum_i w_i softmax(z_i)``: each ``[N, C]``, the result ``[N, C]`` float32,
    computed as a log-sum-exp in float64 (a weight of 0 drops its teacher). The log-weights
    are added as Python numbers: a weights tensor would be a blocking copy to the device
    at every step."""
    log_w = [math.log(w) if w > 0 else -math.inf for w in weights]
    log_p = torch.stack([torch.log_softmax(z.double(), -1) + lw for z, lw in zip(logits, log_w, strict=True)])
    return torch.logsumexp(log_p, 0).float()  # [N, C]


@dataclass
class EnsembleOutputs(Outputs):
    """The teachers' outputs of a batch for ``combine=sum``: ``members`` each teacher's,
    ``logits`` their mixture (what the trainer's agreement statistic reads)."""

    members: Tuple[Outputs, ...] = ()


class EnsembleTeacher:
    """``teacher_outputs(batch)`` of several teachers, each a callable of the batch."""

    def __init__(self, teachers: Sequence[Any], weights: Sequence[float]) -> None:
        self.teachers, self.weights = list(teachers), list(weights)

    def __call__(self, batch: Dict[str, torch.Tensor]) -> EnsembleOutputs:
        outs = tuple(t(batch) for t in self.teachers)
        return EnsembleOutputs(mixture_logits([o.logits for o in outs], self.weights), members=outs)


class SumObjective(torch.nn.Module):
    """``sum_i w_i * objective(student, teacher_i)`` over the teachers of an
    ``EnsembleOutputs`` (``combine=sum``); everything else is ``objective``'s."""

    def __init__(self, objective: Objective, weights: Sequence[float]) -> None:
        super().__init__()
        self.objective = objective
        self.weights = list(weights)

    @property
    def terms(self) -> Any:
        return self.objective.terms

    @property
    def names(self) -> List[str]:
        return self.objective.names

    @property
    def needs_teacher(self) -> bool:
        return self.objective.needs_teacher

    @property
    def features(self) -> Any:
        return self.objective.features

    def shared_tokenizer_terms(self, family: Family) -> List[str]:
        return self.objective.shared_tokenizer_terms(family)

    def pre_stages(self) -> List[PreStage]:
        return self.objective.pre_stages()

    def bind(self, teacher: torch.nn.Module, student: torch.nn.Module, stacks: Sequence[str]) -> None:
        self.objective.bind(teacher, student, stacks)

    def set_progress(self, fraction: float, epoch: int = 0, epochs: int = 1) -> None:
        self.objective.set_progress(fraction, epoch, epochs)

    def forward(self, student: Outputs, supervised: torch.Tensor, teacher: Optional[Outputs] = None,
                labels: Optional[torch.Tensor] = None,
                has_label: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        if not isinstance(teacher, EnsembleOutputs):  # no teacher needed, or refused by the objective
            return self.objective(student, supervised, teacher, labels=labels, has_label=has_label)
        total: Any = 0.0
        parts: Dict[str, torch.Tensor] = {}
        for w, out in zip(self.weights, teacher.members, strict=True):
            loss, p = self.objective(student, supervised, out, labels=labels, has_label=has_label)
            total = total + w * loss
            for k, v in p.items():
                parts[k] = parts[k] + w * v if k in parts else w * v
        return total, parts


def build_objective(cfg: Any, objective: Objective) -> Any:
    """The run's objective for ``cfg``'s teachers: ``objective`` itself with one teacher
    or ``combine=mixture``, wrapped in ``SumObjective`` for ``combine=sum``."""
    check_objective(cfg, objective)
    if not enabled(cfg) or cfg.objective.teachers.combine != Combine.sum:
        return objective
    return SumObjective(objective, [m.weight for m in members(cfg)])


def combined(cfg: Any, tables: Sequence[np.ndarray]) -> Any:
    """The distillation's ``teacher_outputs`` from each teacher's cached ``[N, C]`` logits
    (in ``members`` order): the mixture's table, or every table for ``combine=sum``."""
    weights = [m.weight for m in members(cfg)]
    if cfg.objective.teachers.combine == Combine.sum:
        return EnsembleTeacher([CachedTeacher(t) for t in tables], weights)
    mixed = mixture_logits([torch.from_numpy(np.array(t)) for t in tables], weights)  # a copy: tables are read-only
    return CachedTeacher(mixed.numpy())
