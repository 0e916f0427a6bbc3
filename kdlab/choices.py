"""The closed choices of the config: one ``StrEnum`` per key that takes one of a few words.

The schema (``kdlab.config``) types those keys with these enums, so OmegaConf refuses a
typo (``hardware.device=cdua``) while Hydra composes the config, before any work; the CLI
reports it in one line with the valid values (``kdlab.config_keys``). Members are named
by their value, so YAML files and command lines keep the plain words, and being ``str``
they compare equal to them (``Precision.bf16 == "bf16"``) wherever the code is called
with a plain string (tests, scripts).
"""

from __future__ import annotations

from enum import StrEnum
from typing import List, Type


class Device(StrEnum):
    cpu = "cpu"
    cuda = "cuda"


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Truncation(StrEnum):
    """How a sentence pair longer than ``dataset.max_length`` is cut."""

    longest_first = "longest_first"
    only_first = "only_first"
    only_second = "only_second"


class OnBadRow(StrEnum):
    error = "error"
    skip = "skip"


class RankScoring(StrEnum):
    """Rank classification: each choice by its summed or per-token log-likelihood."""

    sum = "sum"
    mean = "mean"


class EvalStrategy(StrEnum):
    """When a loop evaluates on dev: at its end, every epoch, or every ``eval_every`` steps."""

    end = "end"
    epoch = "epoch"
    steps = "steps"


class Select(StrEnum):
    """Which evaluated weights a loop keeps: the last, or the best by the task's metric."""

    last = "last"
    best = "best"


class OnNan(StrEnum):
    """A non-finite loss or gradient: stop the run, or skip the step (``kdlab.nonfinite``)."""

    stop = "stop"
    skip = "skip"


class OnlineMethod(StrEnum):
    """``online.method``: offline distillation, deep mutual learning, or kdlab's balanced
    forward/reverse KL reconstruction (``kdlab.online``)."""

    none = "none"
    dml = "dml"
    bdkd = "bdkd"


class WeightFn(StrEnum):
    """``online.weight_fn``: the forward-KL weight of an example from the entropy gap."""

    sigmoid = "sigmoid"
    hard = "hard"


class TeacherTerm(StrEnum):
    """``online.teacher_term``: the online teacher's KL term (``kdlab.online.losses``)."""

    reverse = "reverse"
    forward = "forward"
    none = "none"


class OnPolicySchedule(StrEnum):
    """``trainer.on_policy.schedule``: a fixed fraction of student-generated answers (GKD), or
    one raised when the dev loss goes up (DistiLLM's adaptive scheduler; ``kdlab.on_policy``)."""

    fixed = "fixed"
    adaptive = "adaptive"


class Combine(StrEnum):
    """``objective.teachers.combine``: how several teachers make one distillation signal
    (``kdlab.ensemble``): the weighted mixture of their class distributions, or the
    weighted sum of the objective against each teacher."""

    mixture = "mixture"
    sum = "sum"


def values(choice: Type[StrEnum]) -> List[str]:
    return [m.value for m in choice]


def check(key: str, value: str, choice: Type[StrEnum]) -> None:
    """For callers that bypass the schema (the Python API): the same refusal as composition."""
    from kdlab.errors import ConfigError

    if value not in values(choice):
        raise ConfigError(f"{key}={str(value)!r}: valid values are {', '.join(values(choice))}")
