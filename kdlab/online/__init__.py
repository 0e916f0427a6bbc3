"""Online distillation: the teacher keeps training during distillation (``online.method``:
``dml``, ``bdkd``); losses in ``losses``, the phase in ``phase``, the config checks here."""

from __future__ import annotations

from typing import Any

from kdlab import choices
from kdlab.choices import OnlineMethod, TeacherTerm, WeightFn
from kdlab.errors import ConfigError
from kdlab.families import get_family
from kdlab.online.phase import PEER, PHASE, fit, split_dev

__all__ = ["PEER", "PHASE", "check", "enabled", "fit", "split_dev"]


def enabled(cfg: Any) -> bool:
    return cfg.online.method != "none"


def check(cfg: Any) -> None:
    """Refuse, before any model is loaded, what the online phase cannot serve."""
    o = cfg.online
    choices.check("online.method", o.method, OnlineMethod)  # the Python API bypasses the schema
    choices.check("online.weight_fn", o.weight_fn, WeightFn)
    choices.check("online.teacher_term", o.teacher_term, TeacherTerm)
    if not enabled(cfg):
        return
    if o.temperature <= 0:
        raise ConfigError(f"online.temperature={o.temperature} must be > 0")
    if not get_family(cfg.teacher.family).class_logits:
        raise ConfigError(f"online.method={o.method} needs class logits: teacher.family=encoder "
                          f"(got {cfg.teacher.family})")
    if cfg.divergence.name != "none" or cfg.objective.alpha != 0 or cfg.objective.terms:
        raise ConfigError(f"online.method={o.method} computes its own losses (online.*): set divergence=none, "
                          "objective.alpha=0 and no objective.terms")
    if cfg.hardware.distributed:
        raise ConfigError(f"online.method={o.method} runs in one process (both networks in one module): "
                          "use hardware=cpu or hardware=cuda, not a distributed preset")
    if cfg.transfer.name != "none":
        raise ConfigError(f"online.method={o.method} trains on labelled data only: set transfer=none")
    if cfg.student.tokenizer != "teacher":
        raise ConfigError(f"online.method={o.method} needs the student to read the teacher's tokenisation "
                          "(student.tokenizer=teacher)")
