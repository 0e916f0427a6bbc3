"""The objective term protocol: one base class, one registry, one name space.

Every distillation term of the objective (a logit divergence such as KD or Sinkhorn, a
label-aware term such as DKD, a feature term on hidden states or attentions, ULD, TED) is
a ``Term``. A term declares, as class attributes (or instance attributes where its
parameters decide):

- ``reads``: what it reads from a forward pass (``Reads`` flags). The objective gives a
  term exactly that: the fields it did not declare are ``None`` in the ``Outputs`` it
  receives, and a family runs the extra forward work (hidden states, attentions) only
  when a weighted term declares it reads them;
- ``needs_class_distributions``: it compares softmax distributions over the classes, all
  1 on a single output (a regression head), where it would be identically 0;
- ``cross_tokenizer``: it works when teacher and student tokenise differently (ULD);
- ``takes_sparse_teacher``: it can read a teacher stored as top-k log-probabilities
  (``kdlab.token_cache``);
- ``last_stats``: diagnostics of its latest call, logged by the trainer (None: none);

and may override these hooks, all no-ops by default:

- ``bind(teacher, student, stacks)``: check the pair of models, create trainable
  parameters (trained with the student: the objective is part of the optimised module);
- ``set_progress(fraction, epoch, epochs)``: a schedule (KD's annealed temperature, DKD's
  warm-up); ``set_training_epochs(epochs)`` gives it the configured ``trainer.epochs``
  first, for a schedule counted in configured epochs (DKD);
- ``check_setting(task, family)``: preconditions on the task and the model family's
  declared capabilities, checked before any model is loaded;
- ``pre_stages()``: stages that train something before distillation (TED's stage I); the
  runner runs whatever the objective's weighted terms declare.

``compute(student, teacher, labels)`` gives the term's value from what it reads. Logit
terms derive from ``LogitTerm`` and implement ``forward(z_s, z_t, mask=None, ...)``.

A term is registered with ``@TERMS.register("name")``; ``divergence=<name>`` and
``objective.terms.<key>: {name: <name>, ...}`` both look names up in ``TERMS``.
"""

from __future__ import annotations

import enum
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

import torch

from kdlab.errors import ConfigError
from kdlab.registry import Registry

if TYPE_CHECKING:  # kdlab.families imports the divergences, which are terms
    from kdlab.families.base import Family, Outputs


class Reads(enum.Flag):
    """What a term reads from the teacher's and the student's forward passes."""

    NOTHING = 0
    STUDENT_LOGITS = enum.auto()
    TEACHER_LOGITS = enum.auto()
    TOKEN_MASK = enum.auto()  # the student's distilled positions [B, T] (None for class logits)
    TEACHER_MASK = enum.auto()  # the teacher's own answer span, in its own tokenisation
    # gold labels [B]; rows without one (transfer examples) are dropped by the student's
    # mask, which is then the [B] row mask has_label (and'd with the token mask if read)
    LABELS = enum.auto()
    HIDDEN_STATES = enum.auto()
    ATTENTIONS = enum.auto()


LOGITS = Reads.STUDENT_LOGITS | Reads.TEACHER_LOGITS
# the flags whose Outputs field a family fills only on request (``Family.features``)
FEATURE_FIELDS: Dict[Reads, str] = {Reads.HIDDEN_STATES: "hidden_states", Reads.ATTENTIONS: "attentions"}
# what a divergence reads: the two models' logits over their positions (``divergence=<name>``)
DIVERGENCE_READS = LOGITS | Reads.TOKEN_MASK | Reads.TEACHER_MASK


def feature_fields(reads: Reads) -> frozenset:
    """The ``Outputs`` feature fields (``kdlab.families.base.FEATURES``) that ``reads`` names."""
    return frozenset(name for flag, name in FEATURE_FIELDS.items() if flag in reads)


@dataclass
class StageContext:
    """What a pre-stage needs from the runner.

    ``fit(model, family, loop, phase)`` trains ``model`` on ``train_ds`` with the family's
    loss on gold labels and the loop settings ``loop`` (``dataclasses.replace`` of ``loop``
    below, the student's ``trainer`` settings); ``training``: the settings of ``fit`` that
    are not in the loop but change what it trains (precision, world size, ...), for cache
    keys."""

    family: Family
    train_ds: Any
    task: str
    cache_dir: str
    loop: Any  # kdlab.config.LoopConfig
    training: Dict[str, Any]
    fit: Callable[[torch.nn.Module, Family, Any, str], None]
    is_main: Callable[[], bool]
    barrier: Callable[[], None]


@dataclass
class PreStage:
    """A stage a term trains before distillation: ``run(teacher, student, context)`` (the
    models as bound to the objective), named for logs."""

    name: str
    run: Callable[[torch.nn.Module, torch.nn.Module, StageContext], None]


class Term(torch.nn.Module):
    """Base of every objective term (module docstring); subclasses implement ``compute``."""

    reads: Reads = LOGITS | Reads.TOKEN_MASK
    needs_class_distributions: bool = True
    cross_tokenizer: bool = False
    takes_sparse_teacher: bool = False
    # diagnostics of the latest call (Sinkhorn's iterations, transport cost, ...): the
    # trainer logs the numbers among them as ``<phase>/<term>/<key>`` at logging steps
    last_stats: Optional[Dict[str, Any]] = None

    def bind(self, teacher: torch.nn.Module, student: torch.nn.Module, stacks: Sequence[str]) -> None:
        """Check the models and create the term's trainable parameters (``stacks``: the
        family's stacks, see ``Family.stacks``)."""
        return None

    def set_training_epochs(self, epochs: float) -> None:
        """The configured length of training, ``trainer.epochs`` (before ``set_progress``)."""
        return None

    def set_progress(self, fraction: float, epoch: int, epochs: int) -> None:
        """Where training is: ``fraction`` of the optimiser steps done, in the 0-based data
        epoch ``epoch`` of ``epochs`` (a partial last one counted)."""
        return None

    def check_setting(self, task: Any, family: Family) -> None:
        """Raise ``ConfigError`` if the term cannot serve ``task`` (a ``TaskSpec``) with
        models of ``family`` (read its declared capabilities, e.g. ``class_logits``)."""
        return None

    def pre_stages(self) -> Sequence[PreStage]:
        """Stages to run, in order, once the term is bound and before distillation."""
        return ()

    def compute(self, student: Outputs, teacher: Outputs, labels: Optional[torch.Tensor]) -> torch.Tensor:
        """The term's value (float32 scalar) from what it declared it reads (``None`` elsewhere)."""
        raise NotImplementedError


class LogitTerm(Term):
    """A term on logits, called as ``forward(z_s, z_t, mask=None[, labels=][, teacher_mask=])``
    (the keyword arguments it declares in ``reads``). Logits are float32, the teacher's
    detached."""

    def compute(self, student: Outputs, teacher: Outputs, labels: Optional[torch.Tensor]) -> torch.Tensor:
        if teacher.sparse is not None:  # a top-k token cache: see kdlab.divergences.sparse
            return self.sparse_value(student.logits, teacher.sparse, student.mask)
        kw: Dict[str, Any] = {}
        if Reads.LABELS in self.reads:
            kw["labels"] = labels
        if Reads.TEACHER_MASK in self.reads:
            kw["teacher_mask"] = teacher.mask
        return self(student.logits, teacher.logits, mask=student.mask, **kw)

    def sparse_value(self, z_s: torch.Tensor, teacher: Any, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The value against a sparse teacher (``takes_sparse_teacher`` terms override it)."""
        raise ConfigError(f"{type(self).__name__} cannot use a top-k teacher cache (it needs the teacher's "
                          "full distribution); set trainer.teacher_cache.top_k=null")


class Adapted(LogitTerm):
    """A plain ``torch.nn.Module`` called as ``module(z_s, z_t, mask=None)`` given to an
    ``Objective`` directly, with the base's declarations (logits and the token mask; it
    compares class distributions, so it is refused on a single output)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, z_s: torch.Tensor, z_t: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.module(z_s, z_t, mask=mask)


def as_term(module: torch.nn.Module) -> Term:
    """``module`` itself when it is a ``Term``, else its ``Adapted`` wrapper."""
    return module if isinstance(module, Term) else Adapted(module)


class TermRegistry(Registry):
    """The registry of every objective term: only ``Term`` classes, one name space. The
    term modules are imported on the first look-up, so that every name is there."""

    def __init__(self) -> None:
        super().__init__("objective term")
        self._loaded = False

    def register(self, name: str) -> Callable[[Any], Any]:
        deco = super().register(name)

        def checked(obj: Any) -> Any:
            if not (isinstance(obj, type) and issubclass(obj, Term)):
                raise TypeError(f"objective term {name!r}: {obj!r} must be a subclass of kdlab.terms.Term "
                                "(declaring what it reads; see docs/extending.md)")
            return deco(obj)

        return checked

    def load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in ("kdlab.divergences", "kdlab.features"):  # each discovers its own folder
                importlib.import_module(module)

    def names(self) -> List[str]:
        self.load()
        return super().names()

    def __contains__(self, name: object) -> bool:
        self.load()
        return super().__contains__(name)

    def get(self, name: str) -> Any:
        self.load()
        return super().get(name)


TERMS = TermRegistry()


def build(name: str, **params: Any) -> Term:
    """The term registered as ``name``, built with ``params`` (checked against its signature)."""
    return TERMS.build(name, **params)


def names_reading(within: Reads) -> List[str]:
    """The registered terms whose class declares reading nothing beyond ``within``."""
    return [n for n in TERMS.names() if not (TERMS.get(n).reads & ~within)]


__all__ = ["Adapted", "DIVERGENCE_READS", "FEATURE_FIELDS", "LOGITS", "LogitTerm", "PreStage", "Reads",
           "StageContext", "TERMS", "Term", "as_term", "build", "feature_fields", "names_reading"]
