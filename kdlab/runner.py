"""The experiment runner: validate the config, build everything by name, train, evaluate,
write ``results.json``.

``run(cfg)`` is testable on its own; ``kdlab.cli`` only adds the Hydra glue.

``results.json`` is a contract read by other tools; its keys are ``task``, ``metric``,
``teacher`` and ``student`` (each ``{"name", "params", "dev": {metric: value}}``),
``divergence``, ``seed``, ``steps``, ``wall_seconds`` and ``config``. Extensions:
``student.dev_last`` / ``student.dev_best`` (last checkpoint / per-metric maximum over
evaluations), ``student.evaluations``, ``majority``, ``baseline_student``, ``meta``,
``<model>.footprint`` (params, weights size, latency, throughput) and ``savings``
(teacher / student ratios); see ``kdlab.products``.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import transformers
from omegaconf import OmegaConf
from transformers import set_seed

from kdlab import (
    cache_keys,
    checkpoint,
    distributed,
    online,
    products,
    teacher_cache,
    teacher_outputs,
    token_cache,
)
from kdlab.batching import PairedDataset, WithTransfer, loader
from kdlab.config import Config, LoopConfig
from kdlab.data import get_task, load_split, score
from kdlab.data import transfer as transfer_data
from kdlab.errors import ConfigError
from kdlab.evaluate import split_metrics
from kdlab.families import get_family
from kdlab.metadata import config_for_resume, finished_results, run_metadata
from kdlab.methods import ted
from kdlab.models import STUDENTS, TEACHERS, Loaded, count_params
from kdlab.objective import Objective, build_objective, fine_tune_objective
from kdlab.report import format_table
from kdlab.tracking import RESULTS_FILE, NullTracker, Tracker, write_json_atomic
from kdlab.trainer import LoopResult, train
from kdlab.validation import check_pair, same_tokenizer, validate

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
        self.objective = build_objective(cfg) if objective is None else objective
        # the distillation terms that need teacher and student to share a tokenizer
        self.needs_shared = self.objective.shared_tokenizer_terms(self.family.name)
        self.student_tokenizer: Any = None  # set by check_objective

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
        ft = self.cfg.teacher.finetune
        teacher_rows = [] if ft.max_train_samples is None else self.examples("train", ft.max_train_samples, ft.seed)
        return transfer_data.prepare(self.cfg, labelled, teacher_rows)

    def transfer_dataset(self, teacher: Loaded, tokenizer: Any, examples: List[Any]) -> Any:
        """The transfer examples tokenised by ``tokenizer``. The token families are
        teacher-forced on an answer: a transfer example's is the teacher's choice (rank
        classification), which the student is distilled on but never supervised with."""
        if self.family.name != "encoder":
            placeholder = self.encode(teacher.tokenizer, [replace(ex, label=0) for ex in examples])
            choice = self.family.predictions(teacher.model, loader(placeholder, self.cfg.trainer.eval_batch_size),
                                             self.device, self.precision)
            examples = [replace(ex, label=int(c)) for ex, c in zip(examples, choice, strict=True)]
        return self.encode(tokenizer, examples)

    def encode(self, tokenizer: Any, examples: List[Any]) -> Any:
        return self.family.dataset(tokenizer, examples, self.task, self.cfg.dataset,
                                   cache_dir=str(Path(self.cfg.cache_dir) / "tokenized"))

    def evaluate(self, model: torch.nn.Module, evals: Dict[str, Any]) -> Dict[str, float]:
        """Official metrics on each eval split; the first split's keys are unprefixed."""
        return split_metrics(self.family, self.task.name, model, evals, self.cfg.trainer.eval_batch_size,
                             self.device, self.precision)

    # -- models -------------------------------------------------------------------------
    def teacher(self, finetune: bool = True) -> Loaded:
        """The teacher with a task head: loaded, or fine-tuned once and cached on disk
        (``finetune=False``: as loaded, a fresh head left untrained, for an online phase)."""
        tcfg = self.cfg.teacher
        # A fresh task head is drawn under the recipe's seed, so the fine-tuned teacher is a
        # function of its cache key (the model as loaded, data, recipe), whatever ran before.
        set_seed(tcfg.finetune.seed)
        loaded = TEACHERS.get(tcfg.name)(tcfg, self.task.num_labels, self.cfg.cache_dir, self.family)
        self.check_objective(loaded)  # before any fine-tuning
        if not finetune or (loaded.has_task_head and not tcfg.force_finetune):
            return loaded
        ft = tcfg.finetune
        examples = self.examples("train", ft.max_train_samples, ft.seed)
        key = cache_keys.teacher(loaded.model, loaded.tokenizer, self.task.name, examples, ft, self.cfg.dataset,
                                 self.precision, distributed.world_size())
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

    def check_objective(self, teacher: Loaded) -> None:
        """Before any training: build the student and bind the objective's terms to both
        models, so that a precondition of the pair (same width, layer maps, filter counts)
        fails now rather than after the teacher's fine-tuning."""
        student = STUDENTS.get(self.cfg.student.name)(self.cfg.student, teacher, self.task.num_labels, self.family)
        check_pair(teacher, student, self.task.num_labels, self.family.name, self.needs_shared)
        self.student_tokenizer = student.tokenizer
        self.objective.bind(teacher.model, student.model, self.family.stacks)

    def teacher_outputs(self, teacher: Loaded, teacher_hash: str, train_ds: Any, examples: List[Any]):
        """The teacher's outputs per batch: read from the on-disk cache, or computed live."""
        live = teacher_outputs.LiveTeacher(teacher.model, self.family, self.device, self.precision)
        if token_cache.enabled(self.cfg):
            return self.token_teacher_outputs(teacher, teacher_hash, train_ds, examples)
        if not self.cfg.trainer.cache_teacher_outputs or self.family.name != "encoder" \
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

    def fit_student(self, teacher: Loaded, train_ds: Any, evals: Dict[str, Any], phase: str,
                    outputs: Any = None, resume_dir: Optional[Path] = None,
                    meta: Optional[Dict[str, Any]] = None,
                    peer: Optional[Loaded] = None) -> tuple[Loaded, LoopResult]:
        """Train a student: fine-tuned on labels (``outputs`` None), distilled from the
        teacher's ``outputs``, or (``peer``, a copy of the teacher) trained together with
        ``peer`` in an online phase (``kdlab.online``), which leaves ``peer`` trained too."""
        set_seed(self.cfg.seed)
        student = STUDENTS.get(self.cfg.student.name)(self.cfg.student, teacher, self.task.num_labels, self.family)
        objective = self.objective if outputs is not None else fine_tune_objective()
        check_pair(teacher, student, self.task.num_labels, self.family.name,
                   objective.shared_tokenizer_terms(self.family.name))
        self.family.bind_tokenizer(student.model, student.tokenizer)
        objective.bind(teacher.model, student.model, self.family.stacks)
        self.family.features = objective.features  # hidden states / attentions for feature terms
        self.stage_one(objective, teacher, student, train_ds)
        ckpt_dir = Path(self.cfg.output_dir) / "checkpoints" / phase
        if resume_dir is not None and resume_dir != Path(self.cfg.output_dir):
            _copy_checkpoints(resume_dir / "checkpoints" / phase, ckpt_dir)
        if peer is not None:
            return student, online.fit(self, peer, student, train_ds, evals, ckpt_dir, resume_dir is not None, meta,
                                       loop_config(self.cfg.trainer))
        result = train(
            student.model, train_ds, self.family, objective,
            loop_config(self.cfg.trainer), self.tracker, phase,
            self.device, self.precision, teacher_outputs=outputs,
            evaluate=lambda m: self.evaluate(m, evals), metric=self.task.metric,
            checkpoint_dir=ckpt_dir, resume=resume_dir is not None, meta=meta,
            compile=self.cfg.hardware.compile,
        )
        return student, result

    def stage_one(self, objective: Any, teacher: Loaded, student: Loaded, train_ds: Any) -> None:
        """Terms trained in a stage of their own before distillation (TED's filters)."""
        tr = self.cfg.trainer
        for term in ted.stage_one_terms(objective):
            recipe = term.recipe

            def fit(model: torch.nn.Module, family: Any, lr: float, phase: str, recipe=recipe) -> None:
                set_seed(recipe.seed)
                train(model, train_ds, family, fine_tune_objective(), recipe.loop(loop_config(tr), lr),
                      self.tracker, phase, self.device, self.precision)

            training = {"weight_decay": tr.weight_decay, "max_grad_norm": tr.max_grad_norm,
                        "precision": self.precision, "world_size": distributed.world_size()}
            ted.stage_one(term, teacher.model, student.model, ted.StageContext(
                family=self.family, train_ds=train_ds, task=self.task.name, cache_dir=self.cfg.cache_dir,
                training=training, fit=fit, is_main=distributed.is_main, barrier=distributed.barrier))


def _copy_checkpoints(src: Path, dst: Path) -> None:
    """Resuming from another run dir: continue its newest checkpoints in this run's dir."""
    for path in checkpoint.list_checkpoints(src)[-2:]:
        if not (dst / path.name).exists():
            shutil.copytree(path, dst / path.name)


LOWER_IS_BETTER = ("ece",)  # dev_best takes their minimum


def summarise(result: LoopResult, select: str) -> Dict[str, Any]:
    """``dev`` (the selected checkpoint), ``dev_last`` and ``dev_best`` (per metric its best
    over evaluations: the maximum, the minimum of ``ece``)."""
    evals = result.evaluations
    if not evals:  # ranks other than 0 do not evaluate
        return {"dev": {}, "evaluations": 0}
    last = evals[-1]["metrics"]
    best = {k: (min if k in LOWER_IS_BETTER or k.endswith("/ece") else max)(
        e["metrics"][k] for e in evals if k in e["metrics"]) for k in last}
    chosen = last
    if select == "best" and result.best_step is not None:
        chosen = next(e["metrics"] for e in evals if e["step"] == result.best_step)
    return {"dev": chosen, "dev_last": last, "dev_best": best, "evaluations": len(evals),
            "best_step": result.best_step}


def majority_metrics(task_name: str, train_labels: np.ndarray, eval_examples: List[Any]) -> Dict[str, float]:
    """The metrics of always predicting the most frequent training label."""
    values, counts = np.unique(train_labels, return_counts=True)
    preds = np.full(len(eval_examples), values[counts.argmax()])
    return {k: float(v) for k, v in score(task_name, preds, eval_examples).items()}


def resume_dir(cfg: Config) -> Optional[Path]:
    if not cfg.trainer.resume:
        return None
    path = Path(cfg.output_dir) if cfg.trainer.resume == "auto" else Path(cfg.trainer.resume)
    if cfg.trainer.resume != "auto" and not (path / "checkpoints").is_dir():
        raise ConfigError(f"trainer.resume={cfg.trainer.resume!r}: no checkpoints/ directory there "
                          "(give the run directory of a run with trainer.save_every > 0, or 'auto')")
    return path


def wandb_id(path: Optional[Path]) -> Optional[str]:
    """The W&B run id recorded by the newest checkpoint under ``path``, to continue that run."""
    if path is None:
        return None
    for phase_dir in sorted((path / "checkpoints").glob("*")):
        for ckpt in reversed(checkpoint.list_checkpoints(phase_dir)):
            meta = checkpoint.read_meta(ckpt)
            if meta and meta.get("wandb_id"):
                return meta["wandb_id"]
    return None


def run(cfg: Config) -> Dict[str, Any]:
    """Run the experiment of ``cfg``; returns the contents of ``results.json``."""
    start = time.perf_counter()
    validate(cfg)
    done = finished_results(Path(cfg.output_dir), OmegaConf.to_container(cfg, resolve=True)) \
        if cfg.trainer.skip_if_done else None
    if done is not None:
        log.info("%s/%s exists (trainer.skip_if_done): not run again", cfg.output_dir, RESULTS_FILE)
        return done
    objective = build_objective(cfg)  # the run's one objective: bad terms fail before loading anything
    transfer_data.check(cfg, objective)
    token_cache.check(cfg, objective)
    transformers.logging.set_verbosity_error()  # load reports of fresh heads are expected here
    transformers.logging.disable_progress_bar()
    if cfg.hardware.num_threads:
        torch.set_num_threads(cfg.hardware.num_threads)
    device = distributed.init(cfg.hardware.device) if cfg.hardware.distributed else torch.device(cfg.hardware.device)
    task = get_task(cfg.dataset.name)
    out_dir = Path(cfg.output_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resume_from = resume_dir(cfg)
    if distributed.is_main():
        tracker: Tracker = Tracker(cfg.logger, out_dir, resolved, name=cfg.experiment_name,
                                   group=cfg.logger.group or cfg.experiment_name, run_id=wandb_id(resume_from))
    else:
        tracker = NullTracker()
    exit_code = 1
    try:
        exp = Experiment(cfg, tracker, device, objective)
        # Data first: a missing or malformed file fails before any model is loaded.
        train_examples = exp.examples("train", cfg.dataset.max_train_samples, cfg.seed)
        eval_examples = {s: exp.examples(s, cfg.dataset.max_eval_samples, cfg.seed) for s in task.eval_splits}
        make_transfer = exp.transfer_inputs(train_examples)
        teacher = exp.teacher(finetune=not online.enabled(cfg) or cfg.online.teacher.finetuned)
        exp.family.bind_tokenizer(teacher.model, teacher.tokenizer)
        train_ds = exp.encode(teacher.tokenizer, train_examples)
        evals = {split: exp.encode(teacher.tokenizer, ex) for split, ex in eval_examples.items()}
        # A student with a tokenizer of its own (ULD; encoder class logits) reads its own
        # tokenisation of the same examples; in distillation, paired with the teacher's.
        s_train, s_evals = train_ds, evals
        # Transfer examples (no gold label) join the distilled student's data only.
        transfer_examples = make_transfer(teacher.tokenizer)
        t_distill = train_ds
        if transfer_examples:
            t_distill = WithTransfer(train_ds, exp.transfer_dataset(teacher, teacher.tokenizer, transfer_examples))
        distill_ds = t_distill
        if not same_tokenizer(teacher.tokenizer, exp.student_tokenizer):
            s_train = exp.encode(exp.student_tokenizer, train_examples)
            s_evals = {split: exp.encode(exp.student_tokenizer, ex) for split, ex in eval_examples.items()}
            s_distill = s_train if not transfer_examples else WithTransfer(
                s_train, exp.transfer_dataset(teacher, exp.student_tokenizer, transfer_examples))
            distill_ds = PairedDataset(s_distill, t_distill)
        teacher_hash = cache_keys.weights_digest(teacher.model)
        meta = {**run_metadata(train_examples, teacher_hash), "world_size": distributed.world_size()}
        if transfer_examples:
            meta["transfer_data_sha256"] = cache_keys.examples_digest(transfer_examples)[:16]
        tracker.summary({"meta": meta})
        ckpt_meta = {"config": config_for_resume(resolved), "wandb_id": tracker.run_id}
        results: Dict[str, Any] = {"task": task.name, "metric": task.metric}
        results["teacher"] = {"name": cfg.teacher.name, "params": count_params(teacher.model),
                              "dev": exp.evaluate(teacher.model, evals)}
        if task.label_names:  # a fixed label set (not STS-B's scores, nor ReCoRD's entities)
            first = next(iter(evals.values()))
            results["majority"] = {"dev": majority_metrics(task.name, np.asarray(train_ds.labels),
                                                           first.examples)}
        students: Dict[str, Loaded] = {}  # the models the run leaves, by results.json key
        if cfg.trainer.baseline_student:
            base, base_result = exp.fit_student(teacher, s_train, s_evals, "student_baseline",
                                                resume_dir=resume_from, meta=ckpt_meta)
            results["baseline_student"] = {"name": cfg.student.name, "params": count_params(base.model),
                                           **summarise(base_result, cfg.trainer.select)}
            students["baseline_student"] = base
        if online.enabled(cfg):  # the teacher trains on: a copy, so "teacher" stays the one it started from
            peer, outputs = replace(teacher, model=copy.deepcopy(teacher.model)), None
            student, result = exp.fit_student(teacher, train_ds, s_evals, online.PHASE, resume_dir=resume_from,
                                              meta=ckpt_meta, peer=peer)
        else:
            # the teacher's logits on labelled then transfer rows (the order of t_distill)
            outputs = exp.teacher_outputs(teacher, teacher_hash, t_distill, train_examples + transfer_examples)
            student, result = exp.fit_student(teacher, distill_ds, s_evals, "student", outputs=outputs,
                                              resume_dir=resume_from, meta=ckpt_meta)
        if not distributed.is_main():  # rank 0 alone reports
            exit_code = 0
            return {}
        results["student"] = {"name": cfg.student.name, "params": count_params(student.model),
                              **summarise(result, cfg.trainer.select)}
        if isinstance(outputs, token_cache.TokenCachedTeacher):
            results["teacher_cache"] = outputs.report()
        if online.enabled(cfg):  # the co-trained teacher's scores come out of the same evaluations
            results["student"], peer_dev = online.split_dev(results["student"])
            results[online.PEER] = {"name": cfg.teacher.name, "method": cfg.online.method,
                                    "params": count_params(peer.model), **peer_dev}
            students[online.PEER] = peer
        if transfer_examples:
            results["transfer"] = {"name": cfg.transfer.name, "examples": len(transfer_examples)}
        results.update(divergence=cfg.divergence.name, seed=cfg.seed, steps=result.steps,
                       wall_seconds=round(time.perf_counter() - start, 2), config=resolved, meta=meta)
        students["student"] = student
        products.finish(exp, results, teacher, students, evals, s_evals,
                        {"train": len(train_examples), **{k: len(v) for k, v in eval_examples.items()}})
        tracker.log({f"dev/{who}/{k}": v for who in ("teacher", "student") for k, v in results[who]["dev"].items()})
        tracker.summary({"dev_student": results["student"]["dev"], "dev_teacher": results["teacher"]["dev"]})
        write_json_atomic(out_dir / RESULTS_FILE, results)
        print(format_table(results))
        exit_code = 0
        return results
    finally:
        tracker.finish(exit_code)
        distributed.shutdown()
