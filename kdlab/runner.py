"""The experiment runner: validate the config, build everything by name, train, evaluate,
write ``results.json``.

``run(cfg)`` is testable on its own; ``kdlab.cli`` only adds the Hydra glue.

``results.json`` is a contract read by other tools; its keys are ``task``, ``metric``,
``teacher`` and ``student`` (each ``{"name", "params", "dev": {metric: value}}``),
``divergence``, ``seed``, ``steps``, ``wall_seconds`` and ``config``. Extra keys
(``majority``, ``baseline_student``) extend it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import transformers
from omegaconf import OmegaConf
from transformers import set_seed

from kdlab import teacher_cache
from kdlab.batching import EncodedDataset, loader
from kdlab.config import Config
from kdlab.data import compute_metrics, get_task, load_split
from kdlab.errors import ConfigError
from kdlab.models import STUDENTS, TEACHERS, Loaded, count_params
from kdlab.objective import build_objective, fine_tune_objective
from kdlab.tracking import RESULTS_FILE, Tracker, write_json_atomic
from kdlab.trainer import PRECISIONS, LoopSettings, predict, train

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
BAD_ROW_POLICIES = ("error", "skip")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key}={value}: must be > 0")


def validate(cfg: Config) -> None:
    """Check every value that the schema's types cannot, before any work."""
    get_task(cfg.dataset.name)
    TEACHERS.get(cfg.teacher.name)
    STUDENTS.get(cfg.student.name)
    if cfg.hardware.device not in DEVICES:
        raise ConfigError(f"hardware.device={cfg.hardware.device!r}: valid devices are {', '.join(DEVICES)}")
    if cfg.hardware.precision not in PRECISIONS:
        raise ConfigError(
            f"hardware.precision={cfg.hardware.precision!r}: valid values are {', '.join(PRECISIONS)}"
        )
    if cfg.hardware.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hardware=cuda but this machine has no CUDA device; use hardware=cpu")
    if cfg.dataset.on_bad_row not in BAD_ROW_POLICIES:
        raise ConfigError(
            f"dataset.on_bad_row={cfg.dataset.on_bad_row!r}: valid values are {', '.join(BAD_ROW_POLICIES)}"
        )
    _positive("dataset.max_length", cfg.dataset.max_length)
    for node in ("trainer", "teacher.finetune"):
        loop = OmegaConf.select(cfg, node)
        _positive(f"{node}.batch_size", loop.batch_size)
        _positive(f"{node}.lr", loop.lr)
        if loop.max_steps <= 0:
            _positive(f"{node}.epochs", loop.epochs)
        if not 0 <= loop.warmup_ratio < 1:
            raise ConfigError(f"{node}.warmup_ratio={loop.warmup_ratio}: must be in [0, 1)")


def loop_settings(node: Any, trainer: Any) -> LoopSettings:
    return LoopSettings(
        epochs=node.epochs,
        max_steps=node.max_steps,
        lr=node.lr,
        weight_decay=node.weight_decay,
        warmup_ratio=node.warmup_ratio,
        max_grad_norm=node.max_grad_norm,
        log_every=trainer.log_every,
        progress=trainer.progress,
    )


class Experiment:
    """One run: holds the resolved config, the task, the device and the tracker."""

    def __init__(self, cfg: Config, tracker: Tracker) -> None:
        self.cfg = cfg
        self.task = get_task(cfg.dataset.name)
        self.device = torch.device(cfg.hardware.device)
        self.tracker = tracker
        self.steps = 0

    # -- data ---------------------------------------------------------------------------
    def examples(self, split: str, max_samples: Optional[int], seed: int) -> List[Any]:
        d = self.cfg.dataset
        return load_split(
            self.task.name, split, data_dir=d.data_dir, max_samples=max_samples, seed=seed,
            stratified=d.stratified, on_bad_row=d.on_bad_row,
        )

    def encode(self, tokenizer: Any, examples: List[Any]) -> EncodedDataset:
        return EncodedDataset(tokenizer, examples, self.cfg.dataset.max_length, self.task.is_regression)

    def evaluate(self, model: torch.nn.Module, evals: Dict[str, EncodedDataset]) -> Dict[str, float]:
        """Official metrics on each eval split; the first split's keys are unprefixed."""
        out: Dict[str, float] = {}
        for i, (split, ds) in enumerate(evals.items()):
            logits = predict(model, loader(ds, self.cfg.trainer.eval_batch_size, shuffle=False),
                             self.device, self.cfg.hardware.precision)
            preds = logits[:, 0] if self.task.is_regression else logits.argmax(-1)
            metrics = compute_metrics(self.task.name, preds, ds.labels.numpy())
            out.update({(k if i == 0 else f"{split}/{k}"): float(v) for k, v in metrics.items()})
        return out

    # -- models -------------------------------------------------------------------------
    def teacher(self) -> Loaded:
        """The teacher with a task head: loaded, or fine-tuned once and cached on disk."""
        tcfg = self.cfg.teacher
        loaded = TEACHERS.get(tcfg.name)(tcfg, self.task.num_labels, self.cfg.cache_dir)
        if loaded.has_task_head and not tcfg.force_finetune:
            return loaded
        key = teacher_cache.key(loaded.source, self.task.name, tcfg.finetune, self.cfg.dataset.max_length)
        cached = teacher_cache.load(self.cfg.cache_dir, key, self.task.num_labels)
        if cached is not None:
            log.info("using cached fine-tuned teacher %s", cached.source)
            return cached
        ft = tcfg.finetune
        log.info("fine-tuning teacher %s on %s (cache key %s)", tcfg.name, self.task.name, key)
        set_seed(ft.seed)
        train_ds = self.encode(loaded.tokenizer, self.examples("train", ft.max_train_samples, ft.seed))
        train(
            loaded.model, loader(train_ds, ft.batch_size, shuffle=True, seed=ft.seed),
            fine_tune_objective(self.task.is_regression), loop_settings(ft, self.cfg.trainer),
            self.tracker, "teacher_finetune", self.device, self.cfg.hardware.precision,
        )
        return teacher_cache.save(self.cfg.cache_dir, key, loaded, {"task": self.task.name, "teacher": tcfg.name})

    def student(self, teacher: Loaded) -> Loaded:
        scfg = self.cfg.student
        student = STUDENTS.get(scfg.name)(scfg, teacher, self.task.num_labels)
        check_pair(teacher, student, self.task.num_labels)
        return student

    def fit_student(self, teacher: Loaded, train_ds: EncodedDataset, distil: bool, phase: str) -> Loaded:
        set_seed(self.cfg.seed)
        student = self.student(teacher)
        objective = (
            build_objective(self.cfg, self.task.is_regression) if distil
            else fine_tune_objective(self.task.is_regression)
        )
        self.steps = train(
            student.model, loader(train_ds, self.cfg.trainer.batch_size, shuffle=True, seed=self.cfg.seed),
            objective, loop_settings(self.cfg.trainer, self.cfg.trainer), self.tracker, phase,
            self.device, self.cfg.hardware.precision, teacher=teacher.model if distil else None,
        )
        return student


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


def majority_metrics(task_name: str, train_labels: np.ndarray, eval_labels: np.ndarray) -> Dict[str, float]:
    values, counts = np.unique(train_labels, return_counts=True)
    preds = np.full_like(eval_labels, values[counts.argmax()])
    return {k: float(v) for k, v in compute_metrics(task_name, preds, eval_labels).items()}


def run(cfg: Config) -> Dict[str, Any]:
    """Run the experiment of ``cfg``; returns the contents of ``results.json``."""
    start = time.perf_counter()
    validate(cfg)
    task = get_task(cfg.dataset.name)
    build_objective(cfg, task.is_regression)  # fail on bad divergence settings before loading
    transformers.logging.set_verbosity_error()  # load reports of fresh heads are expected here
    transformers.logging.disable_progress_bar()
    if cfg.hardware.num_threads:
        torch.set_num_threads(cfg.hardware.num_threads)
    out_dir = Path(cfg.output_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    tracker = Tracker(cfg.logger, out_dir, resolved, name=cfg.experiment_name)
    exit_code = 1
    try:
        exp = Experiment(cfg, tracker)
        # Data first: a missing or malformed file fails before any model is loaded.
        train_examples = exp.examples("train", cfg.dataset.max_train_samples, cfg.seed)
        eval_examples = {s: exp.examples(s, cfg.dataset.max_eval_samples, cfg.seed) for s in task.eval_splits}
        teacher = exp.teacher()
        train_ds = exp.encode(teacher.tokenizer, train_examples)
        evals = {split: exp.encode(teacher.tokenizer, ex) for split, ex in eval_examples.items()}
        results: Dict[str, Any] = {"task": task.name, "metric": task.metric}
        results["teacher"] = {"name": cfg.teacher.name, "params": count_params(teacher.model),
                              "dev": exp.evaluate(teacher.model, evals)}
        if not task.is_regression:
            first = next(iter(evals.values()))
            results["majority"] = {"dev": majority_metrics(task.name, train_ds.labels.numpy(), first.labels.numpy())}
        if cfg.trainer.baseline_student:
            base = exp.fit_student(teacher, train_ds, distil=False, phase="student_baseline")
            results["baseline_student"] = {"name": cfg.student.name, "params": count_params(base.model),
                                           "dev": exp.evaluate(base.model, evals)}
        student = exp.fit_student(teacher, train_ds, distil=True, phase="student")
        results["student"] = {"name": cfg.student.name, "params": count_params(student.model),
                              "dev": exp.evaluate(student.model, evals)}
        results.update(divergence=cfg.divergence.name, seed=cfg.seed, steps=exp.steps,
                       wall_seconds=round(time.perf_counter() - start, 2), config=resolved)
        tracker.log({f"dev/{who}/{k}": v for who in ("teacher", "student")
                     for k, v in results[who]["dev"].items()})
        tracker.summary({"dev_student": results["student"]["dev"], "dev_teacher": results["teacher"]["dev"]})
        write_json_atomic(out_dir / RESULTS_FILE, results)
        print(format_table(results))
        exit_code = 0
        return results
    finally:
        tracker.finish(exit_code)


def format_table(results: Dict[str, Any]) -> str:
    """A short table: one row per model, the task's metrics as columns."""
    metric = results["metric"]
    cols = [metric] + [k for k in results["teacher"]["dev"] if k != metric]
    rows = [("majority class", None, results.get("majority", {}).get("dev", {})),
            (f"teacher ({results['teacher']['name']})", results["teacher"]["params"], results["teacher"]["dev"])]
    if "baseline_student" in results:
        b = results["baseline_student"]
        rows.append(("student, no distillation", b["params"], b["dev"]))
    s = results["student"]
    rows.append((f"student, distilled ({results['divergence']})", s["params"], s["dev"]))
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{results['task']}  (dev; main metric: {metric})",
             f"{'model':<{width}}{'params':>10}" + "".join(f"{c:>24}" for c in cols)]
    for name, params, dev in rows:
        if not dev:
            continue
        p = f"{params / 1e6:.1f}M" if params else "-"
        lines.append(f"{name:<{width}}{p:>10}" + "".join(
            f"{dev[c]:>24.4f}" if c in dev else f"{'-':>24}" for c in cols))
    return os.linesep.join(lines)
