"""Checks of every value the schema's types cannot express, run before any work."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from omegaconf import OmegaConf

from kdlab import ensemble, on_policy, online
from kdlab.config import Config, LoopConfig
from kdlab.config_keys import check_known_keys
from kdlab.data import get_task
from kdlab.errors import ConfigError
from kdlab.families import FAMILIES, Family, get_family
from kdlab.models import STUDENTS, TEACHERS, Loaded


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key}={value}: must be > 0")


def validate(cfg: Config) -> None:
    """The schema has refused unknown keys, ill-typed values and unknown choices already
    (``kdlab.choices``); this checks ranges, names in registries and combinations."""
    import torch

    check_known_keys(cfg)  # first: a key added with + that nothing reads
    task = get_task(cfg.dataset.name)
    TEACHERS.get(cfg.teacher.name)
    STUDENTS.get(cfg.student.name)
    FAMILIES.get(cfg.teacher.family)
    get_family(cfg.teacher.family).check_task(task)  # e.g. COPA needs a generative family
    if cfg.hardware.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hardware.device=cuda but this machine has no CUDA device; use hardware=cpu")
    if cfg.student.tokenizer != "teacher" and cfg.student.name != "shrunk":
        raise ConfigError(f"student.tokenizer={cfg.student.tokenizer!r} applies to student=shrunk only "
                          f"(student={cfg.student.name} comes with its own or the teacher's tokenizer)")
    ensemble.check(cfg)  # several teachers: weights, the first one is ``teacher``, supported settings
    online.check(cfg)
    on_policy.check(cfg)
    _positive("dataset.max_length", cfg.dataset.max_length)
    _positive("trainer.eval_batch_size", cfg.trainer.eval_batch_size)
    finetunes = ["teacher.finetune", *(f"teachers.{name}.finetune" for name in cfg.teachers)]
    for node in ("trainer", *finetunes):
        check_loop(node, OmegaConf.select(cfg, node))
    for node in finetunes:
        _not_evaluated(node, OmegaConf.select(cfg, node))


def check_loop(node: str, loop: Any) -> None:
    """The ranges of a ``LoopConfig`` (``node``: its key, for messages)."""
    _positive(f"{node}.batch_size", loop.batch_size)
    _positive(f"{node}.grad_accum", loop.grad_accum)
    _positive(f"{node}.lr", loop.lr)
    _positive(f"{node}.keep_last", loop.keep_last)
    _positive(f"{node}.log_every", loop.log_every)
    if loop.max_steps <= 0:
        _positive(f"{node}.epochs", loop.epochs)
    if not 0 <= loop.warmup_ratio < 1:
        raise ConfigError(f"{node}.warmup_ratio={loop.warmup_ratio}: must be in [0, 1)")
    if loop.eval_strategy == "steps":
        _positive(f"{node}.eval_every", loop.eval_every)


def _not_evaluated(node: str, loop: Any) -> None:
    """A loop without a dev set (the teacher's fine-tuning) refuses evaluation settings
    rather than ignoring them."""
    defaults = LoopConfig()
    for key in ("eval_strategy", "eval_every", "select", "patience"):
        if getattr(loop, key) != getattr(defaults, key):
            raise ConfigError(f"{node}.{key}={getattr(loop, key)}: the teacher's fine-tuning is not evaluated on "
                              f"dev (it ends with its last step); leave {node}.{key} at "
                              f"{getattr(defaults, key)} and evaluate the teacher with kdlab-eval")


def check_pair(teacher: Loaded, student: Loaded, num_labels: int, family: Family,
               needs_shared: Optional[Sequence[str]] = None) -> None:
    """Reject a teacher/student pair whose outputs cannot be compared (``needs_shared``:
    the objective terms that need a shared tokenizer, ``None`` for all)."""
    if family.class_logits:  # the generative families score text with their LM heads
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
