"""A run's assembly: the config's task, family, objective, data, teacher and datasets,
each built once, in reading order, and handed to the runner's phases as a ``Setup``.

``Experiment`` is the run's context (config, task, stateless family, device, tracker and
the one objective) with the operations the phases share: reading and encoding data,
loading or fine-tuning the teacher, evaluating, training a student. ``assemble`` reads the
data first (a missing file fails before any model is loaded), then loads the teacher
(fine-tuned once and cached), then encodes every dataset the phases train and evaluate on.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch
from omegaconf import OmegaConf
from transformers import set_seed

from kdlab import (
    cache_keys,
    checkpoint,
    distributed,
    ensemble,
    on_policy,
    online,
    teacher_cache,
    teacher_outputs,
    token_cache,
)
from kdlab.batching import PairedDataset, WithTransfer, loader
from kdlab.config import Config, LoopConfig
from kdlab.data import get_task, load_split
from kdlab.data import transfer as transfer_data
from kdlab.errors import ConfigError
from kdlab.evaluate import split_metrics
from kdlab.families import get_family
from kdlab.metadata import run_metadata
from kdlab.models import STUDENTS, TEACHERS, Loaded
from kdlab.objective import Objective, build_objective, fine_tune_objective
from kdlab.terms import StageContext
from kdlab.tracking import Tracker
from kdlab.trainer import LoopResult, train
from kdlab.validation import check_pair, same_tokenizer

log = logging.getLogger(__name__)


def loop_config(node: Any) -> LoopConfig:
    """The ``LoopConfig`` of a config node (``trainer``, ``teacher.finetune``), every key
    as the config says (its interpolations resolved)."""
    return OmegaConf.to_object(node)


class Experiment:
    """One run: the resolved config, the task, its model family, the device and the tracker."""

    def __init__(self, cfg: Config, tracker: Tracker, device: torch.device,
                 objective: Optional[Objective] = None) -> None:
        """``objective``: the run's distillation objective (``build_objective(cfg)``, built
        here when not given), the only one of the run: it is checked before any model is
        loaded, bound to the pair before the teacher's fine-tuning (so that its
        preconditions fail early) and bound again to the student that trains with it."""
        self.cfg = cfg
        self.task = get_task(cfg.dataset.name)
        self.family = get_family(cfg.teacher.family)
        self.device = device
        self.tracker = tracker
        self.precision = cfg.hardware.precision
        self.objective = ensemble.build_objective(cfg, build_objective(cfg)) if objective is None else objective
        # the distillation terms that need teacher and student to share a tokenizer
        self.needs_shared = self.objective.shared_tokenizer_terms(self.family)
        # the family as distillation runs it: forwards also return what the feature terms
        # read (hidden states, attentions); every other phase runs the plain one
        self.distill_family = self.family.with_features(self.objective.features)

    # -- data ---------------------------------------------------------------------------
    def examples(self, split: str, max_samples: Optional[int], seed: int) -> List[Any]:
        d = self.cfg.dataset
        return load_split(self.task.name, split, data_dir=d.data_dir, max_samples=max_samples, seed=seed,
                          stratified=d.stratified, on_bad_row=d.on_bad_row)

    def transfer_inputs(self, labelled: List[Any]) -> Any:
        """Read and check the transfer data now, before any model is loaded; returns a
        function of the teacher's tokenizer giving the transfer examples."""
        if not transfer_data.enabled(self.cfg):
            return lambda tokenizer: []
        # every teacher's fine-tuning rows stay out of the transfer rows
        teacher_rows = [ex for tcfg in self.teacher_configs() if tcfg.finetune.max_train_samples is not None
                        for ex in self.examples("train", tcfg.finetune.max_train_samples, tcfg.finetune.seed)]
        return transfer_data.prepare(self.cfg, labelled, teacher_rows)

    def teacher_configs(self) -> List[Any]:
        """The run's teacher nodes: ``teacher``, or every entry of ``teachers`` (the first
        of which ``teacher`` describes)."""
        return [m.cfg for m in ensemble.members(self.cfg)] if ensemble.enabled(self.cfg) else [self.cfg.teacher]

    def transfer_dataset(self, teacher: Loaded, tokenizer: Any, examples: List[Any]) -> Any:
        """The transfer examples tokenised by ``tokenizer``. The token families are
        teacher-forced on an answer: a transfer example's is the teacher's choice (rank
        classification), which the student is distilled on but never supervised with."""
        if not self.family.class_logits:
            placeholder = self.encode(teacher.tokenizer, [replace(ex, label=0) for ex in examples])
            choice = self.family.predictions(teacher.model, loader(placeholder, self.cfg.trainer.eval_batch_size),
                                             self.device, self.precision)
            examples = [replace(ex, label=int(c)) for ex, c in zip(examples, choice, strict=True)]
        return self.encode(tokenizer, examples)

    def distill_view(self, teacher: Loaded, tokenizer: Any, labelled: Any, transfer: List[Any]) -> Any:
        """The distillation data as ``tokenizer`` encodes it: the encoded ``labelled`` rows,
        then the ``transfer`` examples (``transfer_dataset``) when there are any."""
        return labelled if not transfer else WithTransfer(labelled, self.transfer_dataset(teacher, tokenizer, transfer))

    def encode(self, tokenizer: Any, examples: List[Any]) -> Any:
        return self.family.dataset(tokenizer, examples, self.task, self.cfg.dataset,
                                   cache_dir=str(Path(self.cfg.cache_dir) / "tokenized"))

    def evaluate(self, model: torch.nn.Module, evals: Dict[str, Any]) -> Dict[str, float]:
        """Official metrics on each eval split; the first split's keys are unprefixed."""
        return split_metrics(self.family, self.task.name, model, evals, self.cfg.trainer.eval_batch_size,
                             self.device, self.precision)

    # -- models -------------------------------------------------------------------------
    def load_teacher(self, tcfg: Any = None, name: str = "") -> Loaded:
        """The teacher of node ``tcfg`` (default ``teacher``; ``teachers.<name>``, named in
        refusals) as its checkpoint gives it. A fresh task head is drawn under the
        fine-tuning recipe's seed, so the fine-tuned teacher is a function of its cache key
        (the model as loaded, data, recipe), whatever ran before."""
        tcfg = self.cfg.teacher if tcfg is None else tcfg
        set_seed(tcfg.finetune.seed)
        try:
            return TEACHERS.get(tcfg.name)(tcfg, self.task.num_labels, self.cfg.cache_dir, self.family)
        except ConfigError as e:  # the builders name teacher.* keys
            raise ConfigError(f"teachers.{name}: {e}" if name else str(e)) from None

    def finetune_examples(self, tcfg: Any) -> List[Any]:
        ft = tcfg.finetune
        return self.examples("train", ft.max_train_samples, ft.seed)

    def teacher_key(self, loaded: Loaded, tcfg: Any, examples: List[Any]) -> str:
        """The cache key of ``loaded`` fine-tuned by ``tcfg.finetune`` on ``examples``: what
        determines the weights (model as loaded, tokenizer, data, recipe), never the
        teacher's name in ``teachers`` or its weight there."""
        return cache_keys.teacher(loaded.model, loaded.tokenizer, self.task.name, examples, tcfg.finetune,
                                  self.cfg.dataset, self.precision, distributed.world_size())

    def fine_tuned(self, loaded: Loaded, tcfg: Any = None) -> Loaded:
        """The teacher with a task head: ``loaded`` when it has one (and ``force_finetune``
        of ``tcfg``, default ``teacher``, is false), else fine-tuned once and cached on disk."""
        tcfg = self.cfg.teacher if tcfg is None else tcfg
        if loaded.has_task_head and not tcfg.force_finetune:
            return loaded
        ft = tcfg.finetune
        examples = self.finetune_examples(tcfg)
        key = self.teacher_key(loaded, tcfg, examples)
        cached = teacher_cache.load(self.cfg.cache_dir, key, self.task.num_labels, self.family)
        if cached is not None:
            log.info("using cached fine-tuned teacher %s", cached.source)
            return cached
        log.info("fine-tuning teacher %s on %s (cache key %s)", tcfg.name, self.task.name, key)
        set_seed(ft.seed)
        train_ds = self.encode(loaded.tokenizer, examples)
        ckpt = teacher_cache.partial(self.cfg.cache_dir, key) if ft.save_every > 0 else None
        if ckpt is not None and checkpoint.list_checkpoints(ckpt):
            log.info("resuming the teacher's fine-tuning from %s", ckpt)
        train(loaded.model, train_ds, self.family, fine_tune_objective(),
              loop_config(ft), self.tracker, "teacher_finetune",
              self.device, self.precision, checkpoint_dir=ckpt, resume=ckpt is not None,
              meta={"config": {"teacher_cache_key": key}})
        if distributed.is_main():
            loaded = teacher_cache.save(self.cfg.cache_dir, key, loaded, {"task": self.task.name, "teacher": tcfg.name})
        distributed.barrier()  # other ranks hold the same (synchronised) weights in memory
        return loaded

    def check_objective(self, teacher: Loaded, teachers: Optional[Mapping[str, Loaded]] = None) -> Any:
        """Before any training: build the student and bind the objective's terms to both
        models, so that a precondition of the pair (same width, layer maps, filter counts)
        fails now rather than after the teacher's fine-tuning. ``teachers``: every teacher
        of ``teachers`` by name (``teacher`` the first), each checked against the student,
        a refusal naming it. Returns the student's tokenizer (the datasets a student with a
        tokenizer of its own reads)."""
        student = STUDENTS.get(self.cfg.student.name)(self.cfg.student, teacher, self.task.num_labels, self.family)
        for name, each in (teachers or {"": teacher}).items():
            try:
                check_pair(each, student, self.task.num_labels, self.family, self.needs_shared)
            except ConfigError as e:
                raise ConfigError(f"teachers.{name}: {e}" if name else str(e)) from None
        on_policy.check_tokenizers(self.cfg, teacher.tokenizer, student.tokenizer)
        self.objective.bind(teacher.model, student.model, self.family.stacks)
        return student.tokenizer

    def teacher_outputs(self, teacher: Loaded, teacher_hash: str, train_ds: Any, examples: List[Any]):
        """The teacher's outputs per batch: read from the on-disk cache, or computed live."""
        live = teacher_outputs.LiveTeacher(teacher.model, self.distill_family, self.device, self.precision)
        if token_cache.enabled(self.cfg):
            return self.token_teacher_outputs(teacher, teacher_hash, train_ds, examples)
        if not self.cfg.trainer.cache_teacher_outputs or not self.family.class_logits \
                or self.objective.features:  # feature terms need live hidden states
            return live
        key = cache_keys.teacher_outputs(teacher.model, teacher.tokenizer, examples, self.cfg.dataset,
                                         self.precision, weights=teacher_hash)
        path = Path(self.cfg.cache_dir) / "teacher_outputs" / f"{key}.npy"
        logits = teacher_outputs.cached(path, lambda: teacher_outputs.compute(
            teacher.model, train_ds, self.family, self.device, self.precision, self.cfg.trainer.eval_batch_size))
        return teacher_outputs.CachedTeacher(logits)

    def token_teacher_outputs(self, teacher: Loaded, teacher_hash: str, train_ds: Any, examples: List[Any]):
        """A token family's teacher read from its top-k cache (``kdlab.token_cache``)."""
        tc = self.cfg.trainer.teacher_cache
        temperature = token_cache.check(self.cfg, self.objective)
        key = cache_keys.token_teacher_outputs(teacher.model, teacher.tokenizer, self.task.name, self.family.name,
                                               examples, self.cfg.dataset, self.precision, tc.top_k, temperature,
                                               token_cache.FORMAT, weights=teacher_hash)
        return token_cache.teacher_outputs(Path(self.cfg.cache_dir) / "teacher_outputs" / key, teacher.model,
                                           train_ds, self.family, self.device, self.precision,
                                           self.cfg.trainer.eval_batch_size, tc.top_k, temperature, tc.shard_tokens)

    def build_student(self, teacher: Loaded) -> Loaded:
        """The run's student of ``teacher``, drawn under the run's seed: the one every
        student phase trains (and a benchmark times)."""
        set_seed(self.cfg.seed)
        return STUDENTS.get(self.cfg.student.name)(self.cfg.student, teacher, self.task.num_labels, self.family)

    def fit_student(self, teacher: Loaded, train_ds: Any, evals: Dict[str, Any], phase: str,
                    outputs: Any = None, resume_dir: Optional[Path] = None,
                    meta: Optional[Dict[str, Any]] = None,
                    peer: Optional[Loaded] = None) -> tuple[Loaded, LoopResult]:
        """Train a student: fine-tuned on labels (``outputs`` None), distilled from the
        teacher's ``outputs``, or (``peer``, a copy of the teacher) trained together with
        ``peer`` in an online phase (``kdlab.online``), which leaves ``peer`` trained too."""
        student = self.build_student(teacher)
        objective, family = (self.objective, self.distill_family) if outputs is not None \
            else (fine_tune_objective(), self.family)
        check_pair(teacher, student, self.task.num_labels, self.family,
                   objective.shared_tokenizer_terms(self.family))
        objective.bind(teacher.model, student.model, self.family.stacks)
        self.pre_stages(objective, family, teacher, student, train_ds)
        ckpt_dir = Path(self.cfg.output_dir) / "checkpoints" / phase
        if resume_dir is not None and resume_dir != Path(self.cfg.output_dir):
            _copy_checkpoints(resume_dir / "checkpoints" / phase, ckpt_dir)
        if peer is not None:
            return student, online.fit(self, peer, student, train_ds, evals, ckpt_dir, resume_dir is not None, meta,
                                       loop_config(self.cfg.trainer))
        # distillation may sample part of its answers from the student (trainer.on_policy)
        sampler = None if outputs is None else on_policy.build(self.cfg, family, student.tokenizer,
                                                                next(iter(evals.values())), self.device)
        result = train(
            student.model, train_ds, family, objective,
            loop_config(self.cfg.trainer), self.tracker, phase,
            self.device, self.precision, teacher_outputs=outputs,
            evaluate=lambda m: self.evaluate(m, evals), metric=self.task.metric,
            checkpoint_dir=ckpt_dir, resume=resume_dir is not None, meta=meta,
            compile=self.cfg.hardware.compile, on_policy=sampler,
        )
        return student, result

    def pre_stages(self, objective: Objective, family: Any, teacher: Loaded, student: Loaded,
                   train_ds: Any) -> None:
        """Run the stages the objective's terms declare before distillation (TED's stage I),
        each fitting on the distillation data with the family's loss on gold labels."""
        stages = objective.pre_stages()
        if not stages:
            return
        tr = self.cfg.trainer

        def fit(model: torch.nn.Module, family: Any, loop: LoopConfig, phase: str) -> None:
            set_seed(loop.seed)
            train(model, train_ds, family, fine_tune_objective(), loop, self.tracker, phase, self.device,
                  self.precision)

        training = {"weight_decay": tr.weight_decay, "max_grad_norm": tr.max_grad_norm,
                    "precision": self.precision, "world_size": distributed.world_size()}
        ctx = StageContext(family=family, train_ds=train_ds, task=self.task.name, cache_dir=self.cfg.cache_dir,
                           loop=loop_config(tr), training=training, fit=fit, is_main=distributed.is_main,
                           barrier=distributed.barrier)
        for stage in stages:
            log.info("pre-stage %s", stage.name)
            stage.run(teacher.model, student.model, ctx)


def _copy_checkpoints(src: Path, dst: Path) -> None:
    """Resuming from another run dir: continue its newest checkpoints in this run's dir."""
    for path in checkpoint.list_checkpoints(src)[-2:]:
        if not (dst / path.name).exists():
            shutil.copytree(path, dst / path.name)


@dataclass
class Setup:
    """Everything the phases of a run read, built once by ``assemble``.

    The teacher's tokenisation (``train_ds``, ``evals``) serves the teacher and a student
    sharing its tokenizer; a student with a tokenizer of its own (ULD; encoder class
    logits) reads ``s_train`` / ``s_evals``, and in distillation ``distill_ds`` pairs both.
    ``t_distill``: the teacher's view of the distillation data, labelled rows then the
    transfer rows (no gold label) that join the distilled student's data only.
    """

    exp: Experiment
    teacher: Loaded
    train_examples: List[Any]
    eval_examples: Dict[str, List[Any]]
    transfer_examples: List[Any]
    train_ds: Any
    evals: Dict[str, Any]
    s_train: Any
    s_evals: Dict[str, Any]
    t_distill: Any
    distill_ds: Any
    teacher_hash: str
    meta: Dict[str, Any]
    # several teachers (``teachers``): each fine-tuned one, in order, the first ``teacher``
    members: List[ensemble.Fitted] = field(default_factory=list)


def assemble(exp: Experiment) -> Setup:
    """Data, teacher and datasets of ``exp``'s run, in this order."""
    cfg, task = exp.cfg, exp.task
    # Data first: a missing or malformed file fails before any model is loaded.
    train_examples = exp.examples("train", cfg.dataset.max_train_samples, cfg.seed)
    eval_examples = {s: exp.examples(s, cfg.dataset.max_eval_samples, cfg.seed) for s in task.eval_splits}
    make_transfer = exp.transfer_inputs(train_examples)
    loaded = exp.load_teacher()
    ms = ensemble.members(cfg) if ensemble.enabled(cfg) else []
    others = {m.name: exp.load_teacher(m.cfg, m.name) for m in ms[1:]}
    # before any fine-tuning; the first of several teachers is ``teacher``
    student_tokenizer = exp.check_objective(loaded, {ms[0].name: loaded, **others} if ms else None)
    # an online phase may start from the teacher as loaded (a fresh head left untrained)
    teacher = exp.fine_tuned(loaded) if not online.enabled(cfg) or cfg.online.teacher.finetuned else loaded
    members = [ensemble.Fitted(ms[0], teacher)] if ms else []
    for m in ms[1:]:
        members.append(ensemble.Fitted(m, exp.fine_tuned(others[m.name], m.cfg)))
    train_ds = exp.encode(teacher.tokenizer, train_examples)
    evals = {split: exp.encode(teacher.tokenizer, ex) for split, ex in eval_examples.items()}
    s_train, s_evals = train_ds, evals
    transfer_examples = make_transfer(teacher.tokenizer)
    t_distill = exp.distill_view(teacher, teacher.tokenizer, train_ds, transfer_examples)
    distill_ds = t_distill
    if not same_tokenizer(teacher.tokenizer, student_tokenizer):
        s_train = exp.encode(student_tokenizer, train_examples)
        s_evals = {split: exp.encode(student_tokenizer, ex) for split, ex in eval_examples.items()}
        distill_ds = PairedDataset(exp.distill_view(teacher, student_tokenizer, s_train, transfer_examples), t_distill)
    teacher_hash = cache_keys.weights_digest(teacher.model)
    meta = {**run_metadata(train_examples, teacher_hash), "world_size": distributed.world_size()}
    if transfer_examples:
        meta["transfer_data_sha256"] = cache_keys.examples_digest(transfer_examples)[:16]
    return Setup(exp, teacher, train_examples, eval_examples, transfer_examples, train_ds, evals, s_train, s_evals,
                 t_distill, distill_ds, teacher_hash, meta, members)
