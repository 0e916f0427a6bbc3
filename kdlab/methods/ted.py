"""TED: task-aware layer-wise distillation (Liang et al., ICML 2023;
cliang1453/task-aware-distillation @1cd33d0).

A *filter* is a linear map (``nonlinear``: Linear-act-Linear) on the output of every
``interval``-th block: blocks ``interval, 2 interval, ...`` (hidden-state indices), so
``n_layers // interval`` filters per model; teacher and student must get the same number.
Teacher filters keep the teacher's width; student filters map to the teacher's width.

- **Stage I** (``stage_one``, the term's declared pre-stage): each filter gets its own pooler (dense on position 0, then
  the model's pooler activation) and task head; the model is frozen and the filters are
  trained on ``mean_k task_loss(head_k(filter_k(h_k)))`` (CE, MSE for regression), teacher
  and student separately. The authors' students are task-fine-tuned before stage I
  (``finetune_student``). The results are cached under ``cache_dir/ted_filters`` by
  ``kdlab.cache_keys.ted_stage_one`` (model, task, the token ids and labels trained on,
  recipe, loop settings, filter layout), as a fine-tuned teacher is.
- **Stage II** (this term): teacher and its filters frozen; student and its filters trained
  with ``CE + kl_alpha T^2 KL_batchmean (T = 2) + mse_alpha * this term`` where the term is
  ``mean_k mean_{b, l, d} (f^s_k(h^s) - f^t_k(h^t))^2``: ``F.mse_loss`` over every position of
  the dynamically padded batch, padding included, as in the authors' code
  (``mask_padding=true`` averages over real tokens only, an extension).

Encoder family only: the stage I heads are sequence-classification heads.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from transformers.activations import ACT2FN

from kdlab import cache_keys
from kdlab.choices import EvalStrategy, Select
from kdlab.config import LoopConfig
from kdlab.errors import ConfigError
from kdlab.families.base import Batch, Family, Outputs, WrappedFamily
from kdlab.families.encoder import INPUTS
from kdlab.features import FEATURE_TERMS, distance, layer_count
from kdlab.methods.layers import HiddenStatePairs
from kdlab.registry import check_types, type_hints
from kdlab.terms import PreStage, StageContext

log = logging.getLogger(__name__)

CACHE = "ted_filters"


@dataclass
class StageOne:
    """Stage I recipe. The authors' GLUE scripts: 3-8 epochs, batch 16-64, teacher lr
    1e-5..3e-5, student lr 4e-5..1e-4 (per task; SST-2: 6 epochs, batch 32, 2e-5 / 4e-5)."""

    epochs: float = 6
    max_steps: int = -1
    batch_size: int = 32
    teacher_lr: float = 2e-5
    student_lr: float = 4e-5
    warmup_ratio: float = 0.0
    finetune_student: bool = True  # fine-tune the student body on the task first
    seed: int = 42

    @classmethod
    def from_params(cls, params: Optional[Dict[str, Any]]) -> StageOne:
        params = OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else dict(params or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"stage1: unknown key(s) {', '.join(unknown)}; valid keys are {', '.join(sorted(known))}")
        check_types("stage1", params, type_hints(cls))
        recipe = cls(**params)
        for key in ("batch_size", "teacher_lr", "student_lr"):
            if getattr(recipe, key) <= 0:
                raise ConfigError(f"stage1.{key}={getattr(recipe, key)}: must be > 0")
        if recipe.epochs <= 0 and recipe.max_steps <= 0:
            raise ConfigError("stage1: give epochs > 0 or max_steps > 0")
        return recipe

    def loop(self, base: LoopConfig, lr: float) -> LoopConfig:
        """The loop of one stage I fit: the recipe's keys over the student's loop ``base``
        (weight decay, clipping, logging, on_nan), one micro-batch a step, no evaluation
        and no checkpoints (a fit is short, and cached once done)."""
        return replace(base, epochs=self.epochs, max_steps=self.max_steps, batch_size=self.batch_size, lr=lr,
                       warmup_ratio=self.warmup_ratio, grad_accum=1, seed=self.seed,
                       eval_strategy=EvalStrategy.end, eval_every=0, select=Select.last, patience=0,
                       save_every=0)


def filter_layers(n_layers: int, interval: int) -> List[int]:
    """Hidden-state indices that get a filter: outputs of blocks interval, 2 interval, ..."""
    if interval < 1 or interval > n_layers:
        raise ConfigError(f"filter interval {interval}: must be in 1..{n_layers} (the model's layers)")
    return [interval * (k + 1) for k in range(n_layers // interval)]


def _filter(d_in: int, d_out: int, nonlinear: bool, act: str) -> torch.nn.Module:
    if nonlinear:
        return torch.nn.Sequential(torch.nn.Linear(d_in, d_in), ACT2FN[act], torch.nn.Linear(d_in, d_out))
    return torch.nn.Linear(d_in, d_out)


class FilterBank(torch.nn.Module):
    """One model's filters with the pooler and task head each gets in stage I."""

    def __init__(self, layers: Sequence[int], config: Any, d_out: int, num_labels: int, nonlinear: bool) -> None:
        super().__init__()
        self.layers = list(layers)
        d_in, act = int(config.hidden_size), getattr(config, "hidden_act", "gelu")
        self.pooler_act = getattr(config, "pooler_hidden_act", "tanh")  # DeBERTa: gelu; BERT's pooler: tanh
        p = getattr(config, "cls_dropout", None)
        self.dropout = torch.nn.Dropout(getattr(config, "hidden_dropout_prob", 0.1) if p is None else p)
        self.filters = torch.nn.ModuleList(_filter(d_in, d_out, nonlinear, act) for _ in self.layers)
        self.poolers = torch.nn.ModuleList(torch.nn.Linear(d_out, d_out) for _ in self.layers)
        self.heads = torch.nn.ModuleList(torch.nn.Linear(d_out, num_labels) for _ in self.layers)

    def states(self, hidden: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """``[B, L, d_out]`` per filter from the model's hidden states (index 0 = embeddings)."""
        return [f(hidden[i]) for f, i in zip(self.filters, self.layers, strict=True)]

    def logits(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[B, K, C]``: each filter's task head on its pooled position-0 state."""
        out = []
        for state, pooler, head in zip(states, self.poolers, self.heads, strict=True):
            pooled = ACT2FN[self.pooler_act](pooler(self.dropout(state[:, 0])))
            out.append(head(self.dropout(pooled)))
        return torch.stack(out, 1)


class _ProbeOutput:
    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits


class FilterProbe(torch.nn.Module):
    """A frozen model with a filter bank on top: ``forward`` gives ``[B, K, C]`` logits."""

    def __init__(self, model: torch.nn.Module, bank: FilterBank) -> None:
        super().__init__()
        self.model, self.bank = model, bank

    def forward(self, **inputs: torch.Tensor) -> _ProbeOutput:
        with torch.no_grad():
            hidden = self.model(**{**inputs, "output_hidden_states": True}).hidden_states
        return _ProbeOutput(self.bank.logits(self.bank.states([h.detach() for h in hidden])))


class ProbeFamily(WrappedFamily):
    """The encoder family for ``FilterProbe``: the task loss averaged over the filters."""

    def forward(self, model: torch.nn.Module, batch: Batch) -> Outputs:
        return Outputs(model(**{k: batch[k] for k in INPUTS if k in batch}).logits)  # [B, K, C]

    def supervised_loss(self, out: Outputs, batch: Batch) -> torch.Tensor:
        k = out.logits.shape[1]
        return sum(self.base.supervised_loss(Outputs(out.logits[:, i]), batch) for i in range(k)) / k

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("filter probes are trained, not evaluated")


@FEATURE_TERMS.register("ted")
class TaskAwareFilters(HiddenStatePairs):
    """TED's stage II term (module docstring). Weight ``mse_alpha`` (SST-2: 20; MNLI 7500,
    QQP 1000, QNLI and MRPC 100, RTE and STS-B 50, CoLA 10), next to ``CE + kl_alpha T^2 KL``
    at T = 2 (kl_alpha 20; MNLI 5; CoLA 0)."""

    def __init__(self, teacher_interval: int = 1, student_interval: int = 1, nonlinear: bool = False,
                 mask_padding: bool = False, stage1: Optional[Dict[str, Any]] = None,
                 stack: Optional[str] = None) -> None:
        super().__init__([[-1, -1]], loss="mse", stack=stack)
        self.teacher_interval, self.student_interval = int(teacher_interval), int(student_interval)
        self.nonlinear, self.mask_padding = bool(nonlinear), bool(mask_padding)
        self.recipe = StageOne.from_params(stage1)
        self.teacher_bank: Optional[FilterBank] = None
        self.student_bank: Optional[FilterBank] = None
        self.trained = False  # stage I done (or loaded)

    def check_setting(self, task: Any, family: Family) -> None:
        super().check_setting(task, family)
        if not family.class_logits:
            raise ConfigError(f"needs teacher.family=encoder: its stage I trains sequence-classification heads "
                              f"on the filters (teacher.family={family.name})")

    def pre_stages(self) -> Sequence[PreStage]:
        """Stage I: the filters (and, with ``finetune_student``, the student) trained first."""
        return (PreStage("ted_stage_one", lambda teacher, student, ctx: stage_one(self, teacher, student, ctx)),)

    def bind(self, teacher: torch.nn.Module, student: torch.nn.Module, stacks: Sequence[str]) -> None:
        stack = self.resolve_stack(stacks)
        n_t, n_s = layer_count(teacher.config, stack), layer_count(student.config, stack)
        lt, ls = filter_layers(n_t, self.teacher_interval), filter_layers(n_s, self.student_interval)
        if len(lt) != len(ls):
            raise ConfigError(
                f"ted: teacher_interval={self.teacher_interval} gives {len(lt)} filters on the teacher's {n_t} "
                f"layers, student_interval={self.student_interval} gives {len(ls)} on the student's {n_s}; "
                "choose intervals with n_teacher / teacher_interval == n_student / student_interval")
        self.pairs = [[t, s] for t, s in zip(lt, ls, strict=True)]
        super().bind(teacher, student, stacks)
        d_t, labels = int(teacher.config.hidden_size), int(teacher.config.num_labels)
        self.teacher_bank = FilterBank(lt, teacher.config, d_t, labels, self.nonlinear).requires_grad_(False)
        self.student_bank = FilterBank(ls, student.config, d_t, labels, self.nonlinear)
        self.trained = False

    def forward(self, student: Outputs, teacher: Outputs) -> torch.Tensor:
        if not self.trained:
            raise RuntimeError("ted: stage II before stage I (kdlab.methods.ted.stage_one trains the filters)")
        h_s, h_t, mask = self.hidden_pair(student, teacher)
        with torch.no_grad():
            f_t = self.teacher_bank.states([h.float() for h in h_t])
        f_s = self.student_bank.states([h.float() for h in h_s])
        if self.mask_padding:
            return torch.stack([distance(s, t, "mse", mask) for s, t in zip(f_s, f_t, strict=True)]).mean()
        return torch.stack([F.mse_loss(s, t) for s, t in zip(f_s, f_t, strict=True)]).mean()


# -- stage I ------------------------------------------------------------------------------
def _key(who: str, model: torch.nn.Module, term: TaskAwareFilters, bank: FilterBank, data: str,
         ctx: StageContext) -> str:
    # the bank's initial weights (drawn when the term was bound) fix its shapes too
    layout = {"layers": bank.layers, "nonlinear": term.nonlinear, "init": cache_keys.weights_digest(bank)}
    return cache_keys.ted_stage_one(who, model, ctx.task, data, layout, asdict(term.recipe), ctx.training)


def _save(path: Path, state: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)  # never a half-written entry


def _train_bank(term: TaskAwareFilters, model: torch.nn.Module, bank: FilterBank, lr: float, phase: str,
                ctx: StageContext) -> None:
    """Train ``bank`` on the frozen ``model`` (its trainable flags and mode restored after)."""
    flags, mode = [p.requires_grad for p in model.parameters()], model.training
    model.requires_grad_(False)
    bank.requires_grad_(True)
    try:
        ctx.fit(FilterProbe(model, bank), ProbeFamily(ctx.family), term.recipe.loop(ctx.loop, lr), phase)
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(mode)


def stage_one(term: TaskAwareFilters, teacher: torch.nn.Module, student: torch.nn.Module,
              ctx: StageContext) -> None:
    """Train (or load from the cache) the teacher's and the student's filters; with
    ``finetune_student`` the student's weights are replaced by its task-fine-tuned ones."""
    if term.teacher_bank is None or term.student_bank is None:
        raise RuntimeError("ted: bind the term to the models before stage I")
    root = Path(ctx.cache_dir) / CACHE
    data = cache_keys.dataset_digest(ctx.train_ds)  # token ids and labels stage I trains on
    path = root / f"{_key('teacher', teacher, term, term.teacher_bank, data, ctx)}.pt"
    if path.is_file():
        log.info("ted: cached teacher filters %s", path.name)
        term.teacher_bank.load_state_dict(torch.load(path, map_location="cpu"))
    else:
        _train_bank(term, teacher, term.teacher_bank, term.recipe.teacher_lr, "ted_teacher_filters", ctx)
        if ctx.is_main():
            _save(path, term.teacher_bank.state_dict())
    term.teacher_bank.requires_grad_(False)
    path = root / f"{_key('student', student, term, term.student_bank, data, ctx)}.pt"
    if path.is_file():
        log.info("ted: cached student stage I %s", path.name)
        state = torch.load(path, map_location="cpu")
        student.load_state_dict(state["model"])
        term.student_bank.load_state_dict(state["bank"])
    else:
        if term.recipe.finetune_student:
            ctx.fit(student, ctx.family, term.recipe.loop(ctx.loop, term.recipe.student_lr), "ted_student_finetune")
        _train_bank(term, student, term.student_bank, term.recipe.student_lr, "ted_student_filters", ctx)
        if ctx.is_main():
            _save(path, {"model": student.state_dict(), "bank": term.student_bank.state_dict()})
    ctx.barrier()
    term.trained = True


__all__ = ["FilterBank", "FilterProbe", "StageOne", "TaskAwareFilters", "filter_layers", "stage_one"]
