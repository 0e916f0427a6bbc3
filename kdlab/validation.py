"""Checks of every value the schema's types cannot express, run before any work."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from omegaconf import OmegaConf

from kdlab.config import Config
from kdlab.config_keys import check_known_keys
from kdlab.data import get_task
from kdlab.errors import ConfigError
from kdlab.families import FAMILIES, get_family
from kdlab.models import STUDENTS, TEACHERS, Loaded
from kdlab.precision import PRECISIONS
from kdlab.trainer import EVAL_STRATEGIES, ON_NAN, SELECT

DEVICES = ("cpu", "cuda")
BAD_ROW_POLICIES = ("error", "skip")
RANK_SCORING = ("sum", "mean")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key}={value}: must be > 0")


def _choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r}: valid values are {', '.join(choices)}")


def validate(cfg: Config) -> None:
    import torch

    check_known_keys(cfg)  # first: a key added with + that nothing reads
    task = get_task(cfg.dataset.name)
    TEACHERS.get(cfg.teacher.name)
    STUDENTS.get(cfg.student.name)
    FAMILIES.get(cfg.teacher.family)
    get_family(cfg.teacher.family).check_task(task)  # e.g. COPA needs a generative family
    _choice("hardware.device", cfg.hardware.device, DEVICES)
    _choice("hardware.precision", cfg.hardware.precision, PRECISIONS)
    if cfg.hardware.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hardware.device=cuda but this machine has no CUDA device; use hardware=cpu")
    if cfg.student.tokenizer != "teacher" and cfg.student.name != "shrunk":
        raise ConfigError(f"student.tokenizer={cfg.student.tokenizer!r} applies to student=shrunk only "
                          f"(student={cfg.student.name} comes with its own or the teacher's tokenizer)")
    _choice("dataset.on_bad_row", cfg.dataset.on_bad_row, BAD_ROW_POLICIES)
    _choice("dataset.rank_scoring", cfg.dataset.rank_scoring, RANK_SCORING)
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


def check_pair(teacher: Loaded, student: Loaded, num_labels: int, family: str = "encoder",
               needs_shared: Optional[Sequence[str]] = None) -> None:
    """Reject a teacher/student pair whose outputs cannot be compared (``needs_shared``:
    the objective terms that need a shared tokenizer, ``None`` for all)."""
    if family == "encoder":  # the generative families score text with their LM heads
        t_labels = teacher.model.config.num_labels
        s_labels = student.model.config.num_labels
        if t_labels != s_labels or t_labels != num_labels:
            raise ConfigError(
                f"incompatible teacher/student pair: teacher has {t_labels} labels, student "
                f"{s_labels}, task {num_labels}. Use models trained for this task."
            )
    check_vocab(teacher.tokenizer, teacher.model.config, student.tokenizer, student.model.config, needs_shared)


def same_tokenizer(a: Any, b: Any) -> bool:
    return a is b or a.get_vocab() == b.get_vocab()


def check_vocab(t_tokenizer: Any, t_config: Any, s_tokenizer: Any, s_config: Any,
                needs_shared: Optional[Sequence[str]] = None) -> None:
    """Each model's vocabulary must cover its tokenizer; the tokenizers must be the same
    unless no objective term needs them to be (``needs_shared`` empty: ULD alone, or class
    logits of the encoder family).

    Vocabularies padded beyond the tokenizer (to a multiple of 8 or 64 rows) are allowed:
    the token-level families slice each model's logits to its tokenizer's size.
    """
    if (needs_shared is None or needs_shared) and not same_tokenizer(t_tokenizer, s_tokenizer):
        terms = "the objective's terms need" if needs_shared is None else \
            f"objective term(s) {', '.join(needs_shared)} need"
        raise ConfigError(
            f"incompatible teacher/student pair: different tokenizers (teacher "
            f"{type(t_tokenizer).__name__} with {len(t_tokenizer)} tokens, student "
            f"{type(s_tokenizer).__name__} with {len(s_tokenizer)}); {terms} a shared tokenizer (they "
            "compare token positions or distributions over one vocabulary). Use a student with the "
            "teacher's tokenizer, or divergence=uld with objective.alpha=0 and no other distillation "
            "term, which distils across tokenizers."
        )
    for who, config, tokenizer in (("teacher", t_config, t_tokenizer), ("student", s_config, s_tokenizer)):
        size, n = getattr(config, "vocab_size", None), len(tokenizer)
        if size is not None and size < n:
            raise ConfigError(
                f"incompatible teacher/student pair: the {who} has a vocabulary of {size} tokens, "
                f"smaller than its tokenizer's {n}"
            )
