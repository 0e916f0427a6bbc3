"""On-policy distillation: part of each batch's answers sampled from the student.

Supervised (off-policy) distillation teacher-forces the student on gold answers; at
inference it continues its own. With ``trainer.on_policy.lmbda > 0`` (seq2seq, causal),
``OnPolicy`` replaces the answers of a fraction ``lmbda`` of each micro-batch's examples by
answers the student samples (``kdlab.families.generation``); the teacher scores those
sequences live (prompt + generated answer) and every distillation term is computed on the
generated answer tokens only (prompt and padding after EOS masked). Generated rows carry
``has_label = False``: cross-entropy and label terms skip them, as they skip transfer rows.

Schedules (``trainer.on_policy.schedule``):

- ``fixed``: ``lmbda`` throughout: GKD (Agarwal et al., ICLR 2024), whose student data
  fraction is ``lmbda``.
- ``adaptive``: DistiLLM's adaptive off-policy scheduler (Ko et al., ICML 2024), as kdlab
  reconstructs it: ``lmbda`` starts at its configured value; before training and after every
  evaluation the student's token cross-entropy on the first dev split's gold answers is
  measured, and when it is at least the reference plus ``loss_eps``, ``lmbda`` rises by
  ``lmbda_step`` (at most 1) and that loss becomes the reference. docs/methods.md says
  which parts are the published algorithm.

The rows are drawn from a generator seeded by the run's seed and the micro-batch's number,
and ``lmbda`` / the reference loss are saved in checkpoints: a resumed run draws the same rows.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch

from kdlab import choices, token_cache
from kdlab.batching import loader
from kdlab.choices import OnPolicySchedule
from kdlab.config import OnPolicyConfig
from kdlab.errors import ConfigError
from kdlab.families import get_family
from kdlab.families import tokens as tk
from kdlab.families.base import Batch, Family
from kdlab.families.generation import Sampling, select_rows
from kdlab.precision import autocast

KEY = "trainer.on_policy"


def active(cfg: Any) -> bool:
    """Whether ``cfg``'s distillation may generate answers (a positive lmbda, or a schedule
    that can raise it)."""
    op = cfg.trainer.on_policy
    return op.lmbda > 0 or op.schedule == "adaptive"


def check(cfg: Any) -> None:
    """Refuse, before any model is loaded, what on-policy distillation cannot serve."""
    op = cfg.trainer.on_policy
    choices.check(f"{KEY}.schedule", op.schedule, OnPolicySchedule)  # the Python API bypasses the schema
    if not 0 <= op.lmbda <= 1:
        raise ConfigError(f"{KEY}.lmbda={op.lmbda}: must be in [0, 1] (the fraction of student-generated answers)")
    if not active(cfg):
        return
    if not op.temperature > 0:
        raise ConfigError(f"{KEY}.temperature={op.temperature}: must be > 0")
    if not 0 < op.top_p <= 1:
        raise ConfigError(f"{KEY}.top_p={op.top_p}: must be in (0, 1]")
    if op.max_new_tokens < 1:
        raise ConfigError(f"{KEY}.max_new_tokens={op.max_new_tokens}: must be >= 1")
    on = f"{KEY}.lmbda={op.lmbda}" if op.schedule == "fixed" else f"{KEY}.schedule=adaptive"
    if get_family(cfg.teacher.family).class_logits:
        raise ConfigError(f"{on} samples answers from the student: it needs teacher.family=seq2seq or causal "
                          f"(the encoder family predicts classes, it generates nothing); set {KEY}.lmbda=0")
    if token_cache.enabled(cfg):
        raise ConfigError(f"{on}: the teacher must score answers the student generates during training, which a "
                          f"teacher-output cache cannot hold; set trainer.teacher_cache.top_k=null (or {KEY}.lmbda=0)")
    if cfg.student.tokenizer != "teacher":
        raise ConfigError(f"{on}: the teacher scores the student's generated token ids, so they must share a "
                          f"tokenizer; set student.tokenizer=teacher (or {KEY}.lmbda=0)")
    if op.schedule == "adaptive":
        if not 0 < op.lmbda_step <= 1:
            raise ConfigError(f"{KEY}.lmbda_step={op.lmbda_step}: must be in (0, 1]")
        if op.loss_eps < 0:
            raise ConfigError(f"{KEY}.loss_eps={op.loss_eps}: must be >= 0")
        if cfg.trainer.eval_strategy == "end":
            raise ConfigError(f"{KEY}.schedule=adaptive changes lmbda after evaluations on dev; set "
                              "trainer.eval_strategy=epoch (or steps with trainer.eval_every)")
        if cfg.hardware.distributed:
            raise ConfigError(f"{KEY}.schedule=adaptive measures the dev loss on one process; use hardware=cpu or "
                              f"hardware=cuda, or {KEY}.schedule=fixed")


def check_tokenizers(cfg: Any, teacher_tokenizer: Any, student_tokenizer: Any) -> None:
    """Refuse, once both models are built and before the teacher is fine-tuned, a student whose
    tokenizer is not the teacher's (a pretrained student): the teacher scores its token ids."""
    from kdlab.validation import same_tokenizer  # validation imports this module

    if active(cfg) and not same_tokenizer(teacher_tokenizer, student_tokenizer):
        raise ConfigError(f"{KEY}: the teacher scores the student's generated token ids, but the student's tokenizer "
                          f"({len(student_tokenizer)} tokens) is not the teacher's ({len(teacher_tokenizer)}); use a "
                          f"student with the teacher's tokenizer, or set {KEY}.lmbda=0")


@torch.no_grad()
def dev_loss(family: Family, model: torch.nn.Module, dataset: Any, batch_size: int, device: torch.device,
             precision: str) -> float:
    """The student's token cross-entropy on ``dataset``'s gold answers, averaged over tokens
    (eval mode, restored after): the signal of the adaptive schedule."""
    training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for batch in loader(dataset, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, precision):
            out = family.forward(model, batch)
        n = int(out.mask.sum())
        if n:
            total += float(tk.token_cross_entropy(out.logits, batch["target_ids"], out.mask)) * n
            tokens += n
    model.train(training)
    return total / max(tokens, 1)


class OnPolicy:
    """Replaces a seeded share of each micro-batch's answers by the student's samples; under
    the adaptive schedule, raises that share when the dev loss goes up."""

    def __init__(self, cfg: OnPolicyConfig, family: Any, sampling: Sampling, seed: int,
                 dev_loss: Optional[Callable[[torch.nn.Module], float]] = None, precision: str = "fp32") -> None:
        """``precision``: the autocast the student samples under (the training forward's)."""
        if cfg.schedule == "adaptive" and dev_loss is None:
            raise ValueError("the adaptive schedule needs a dev loss")
        self.cfg, self.family, self.sampling, self.seed, self.dev_loss = cfg, family, sampling, seed, dev_loss
        self.precision = precision
        self.lmbda = float(cfg.lmbda)
        self.reference: Optional[float] = None  # adaptive: the dev loss lmbda last rose at (or the first one)
        self.rows, self.generated = 0, 0  # this logging window
        self.total_rows, self.total_generated = 0, 0  # the whole run (results.json)

    @property
    def adaptive(self) -> bool:
        return self.cfg.schedule == "adaptive"

    def start(self, model: torch.nn.Module) -> None:
        """Before the first step: the adaptive schedule's reference loss (kept on a resume)."""
        if self.adaptive and self.reference is None:
            self.reference = self.dev_loss(model)

    def __call__(self, model: torch.nn.Module, batch: Batch, counter: int) -> Batch:
        """``batch`` (micro-batch number ``counter`` of the run) with its drawn rows' answers
        generated by ``model`` and marked ``has_label = False``; unchanged when none is drawn."""
        n = batch["labels"].shape[0]
        rows = select_rows(n, self.lmbda, self.seed, counter)  # [B] bool, on the host
        self.rows += n
        self.generated += int(rows.sum())
        self.total_rows += n
        self.total_generated += int(rows.sum())
        if not rows.any():
            return batch
        device = batch["labels"].device
        with autocast(device, self.precision):
            out = self.family.generated_batch(model, batch, rows, self.sampling)
        keep = ~rows.to(device)
        out["has_label"] = keep if batch.get("has_label") is None else batch["has_label"] & keep
        return out

    def after_evaluation(self, model: torch.nn.Module) -> Dict[str, float]:
        """The adaptive schedule's step after an evaluation; what to log."""
        if not self.adaptive:
            return {}
        loss = self.dev_loss(model)
        if loss >= self.reference + self.cfg.loss_eps:
            self.lmbda = min(1.0, self.lmbda + self.cfg.lmbda_step)
            self.reference = loss
        return {"on_policy/dev_loss": loss, "on_policy/lmbda": self.lmbda}

    def window(self) -> Dict[str, float]:
        """The logging window's share of generated answers and the current lmbda; resets."""
        out = {"on_policy/lmbda": self.lmbda, "on_policy/generated": self.generated / max(self.rows, 1)}
        self.rows, self.generated = 0, 0
        return out

    def summary(self) -> Dict[str, Any]:
        """``results.json``'s ``on_policy``: the schedule, its last lmbda and the share of the
        run's answers that were generated."""
        return {"schedule": str(self.cfg.schedule), "lmbda": self.lmbda,
                "generated": self.total_generated / max(self.total_rows, 1)}

    def state_dict(self) -> Dict[str, Any]:
        return {"lmbda": self.lmbda, "reference": self.reference, "total_rows": self.total_rows,
                "total_generated": self.total_generated}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.lmbda, self.reference = float(state["lmbda"]), state["reference"]
        self.total_rows, self.total_generated = int(state["total_rows"]), int(state["total_generated"])


def build(cfg: Any, family: Family, tokenizer: Any, dev_set: Any, device: torch.device) -> Optional[OnPolicy]:
    """The run's ``OnPolicy`` for its distillation loop (``None`` when off): samples with the
    student's ``tokenizer``'s EOS and padding; the adaptive schedule's dev loss on ``dev_set``."""
    if not active(cfg):
        return None
    op = cfg.trainer.on_policy
    sampling = Sampling(op.temperature, op.top_p, op.max_new_tokens, tk.eos_id(tokenizer), tk.pad_id(tokenizer))
    measure = None
    if op.schedule == "adaptive":
        def measure(model: torch.nn.Module) -> float:
            return dev_loss(family, model, dev_set, cfg.trainer.eval_batch_size, device, cfg.hardware.precision)
    return OnPolicy(op, family, sampling, cfg.trainer.seed, measure, cfg.hardware.precision)
