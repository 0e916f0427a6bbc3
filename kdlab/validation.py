"""Checks of every value the schema's types cannot express, run before any work."""

from __future__ import annotations

from omegaconf import OmegaConf

from kdlab.config import Config
from kdlab.data import get_task
from kdlab.errors import ConfigError
from kdlab.families import FAMILIES
from kdlab.models import STUDENTS, TEACHERS, Loaded
from kdlab.precision import PRECISIONS
from kdlab.trainer import EVAL_STRATEGIES, ON_NAN, SELECT

DEVICES = ("cpu", "cuda")
BAD_ROW_POLICIES = ("error", "skip")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key}={value}: must be > 0")


def _choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r}: valid values are {', '.join(choices)}")


def validate(cfg: Config) -> None:
    import torch

    get_task(cfg.dataset.name)
    TEACHERS.get(cfg.teacher.name)
    STUDENTS.get(cfg.student.name)
    FAMILIES.get(cfg.teacher.family)
    _choice("hardware.device", cfg.hardware.device, DEVICES)
    _choice("hardware.precision", cfg.hardware.precision, PRECISIONS)
    if cfg.hardware.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hardware.device=cuda but this machine has no CUDA device; use hardware=cpu")
    _choice("dataset.on_bad_row", cfg.dataset.on_bad_row, BAD_ROW_POLICIES)
    _positive("dataset.max_length", cfg.dataset.max_length)
    t = cfg.trainer
    _choice("trainer.eval_strategy", t.eval_strategy, EVAL_STRATEGIES)
    _choice("trainer.select", t.select, SELECT)
    _choice("trainer.on_nan", t.on_nan, ON_NAN)
    if t.eval_strategy == "steps":
        _positive("trainer.eval_every", t.eval_every)
    _positive("trainer.eval_batch_size", t.eval_batch_size)
    _positive("trainer.keep_last", t.keep_last)
    for node in ("trainer", "teacher.finetune"):
        loop = OmegaConf.select(cfg, node)
        _positive(f"{node}.batch_size", loop.batch_size)
        _positive(f"{node}.grad_accum", loop.grad_accum)
        _positive(f"{node}.lr", loop.lr)
        if loop.max_steps <= 0:
            _positive(f"{node}.epochs", loop.epochs)
        if not 0 <= loop.warmup_ratio < 1:
            raise ConfigError(f"{node}.warmup_ratio={loop.warmup_ratio}: must be in [0, 1)")


def check_pair(teacher: Loaded, student: Loaded, num_labels: int) -> None:
    """Reject a teacher/student pair whose outputs cannot be compared."""
    t_labels = teacher.model.config.num_labels
    s_labels = student.model.config.num_labels
    if t_labels != s_labels or t_labels != num_labels:
        raise ConfigError(
            f"incompatible teacher/student pair: teacher has {t_labels} labels, student "
            f"{s_labels}, task {num_labels}. Use models trained for this task."
        )
    t_vocab = getattr(teacher.model.config, "vocab_size", None)
    s_vocab = getattr(student.model.config, "vocab_size", None)
    if t_vocab != s_vocab:
        raise ConfigError(
            f"incompatible teacher/student pair: vocabularies of {t_vocab} and {s_vocab} tokens. "
            "Teacher and student must share a tokenizer."
        )
