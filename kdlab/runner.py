"""The experiment runner: a run is a short list of phases over one ``Setup``.

``run(cfg)`` reads top to bottom: validate the config and build its objective (before any
model is loaded), assemble the data, the teacher (fine-tuned once, cached) and the datasets
(``kdlab.assembly``), then the phases: reference rows (teacher, majority class), baseline
student, distillation (with the terms' pre-stages, TED's stage I; or the online phase) and
summary. ``kdlab.cli`` only adds the Hydra glue. ``results.json``, a contract read by other
tools, is described in ``kdlab.products``.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
import transformers
from omegaconf import OmegaConf

from kdlab import checkpoint, distributed, ensemble, ensemble_phases, online, products, token_cache
from kdlab.assembly import Experiment, Setup, assemble
from kdlab.config import Config
from kdlab.data import transfer as transfer_data
from kdlab.metadata import config_for_resume, finished_results
from kdlab.models import Loaded, count_params
from kdlab.objective import build_objective
from kdlab.report import format_table
from kdlab.tracking import RESULTS_FILE, NullTracker, Tracker, write_json_atomic
from kdlab.trainer import LoopResult
from kdlab.validation import validate

log = logging.getLogger(__name__)

def run(cfg: Config) -> Dict[str, Any]:
    """Run the experiment of ``cfg``; returns the contents of ``results.json``."""
    start = time.perf_counter()
    validate(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if cfg.trainer.skip_if_done and (done := finished_results(Path(cfg.output_dir), resolved)) is not None:
        log.info("%s/%s exists (trainer.skip_if_done): not run again", cfg.output_dir, RESULTS_FILE)
        return done
    objective = ensemble.build_objective(cfg, build_objective(cfg))  # the run's one: bad terms fail now
    transfer_data.check(cfg, objective)
    token_cache.check(cfg, objective)
    transformers.logging.set_verbosity_error()  # load reports of fresh heads are expected here
    transformers.logging.disable_progress_bar()
    if cfg.hardware.num_threads:
        torch.set_num_threads(cfg.hardware.num_threads)
    device = distributed.init(cfg.hardware.device) if cfg.hardware.distributed else torch.device(cfg.hardware.device)
    resume_from = checkpoint.resume_dir(cfg)
    tracker = open_tracker(cfg, resolved, resume_from)
    exit_code = 1
    try:
        setup = assemble(Experiment(cfg, tracker, device, objective))
        tracker.summary({"meta": setup.meta})
        resume = {"resume_dir": resume_from, "meta": {"config": config_for_resume(resolved), "wandb_id": tracker.run_id}}
        results = reference_rows(setup)
        students: Dict[str, Loaded] = {}  # the models the run leaves, by results.json key
        if cfg.trainer.baseline_student:
            students["baseline_student"] = baseline_phase(setup, results, resume)
        result = distillation_phase(setup, results, students, resume)
        if distributed.is_main():  # rank 0 alone reports
            results.update(divergence=cfg.divergence.name, terms=objective.names, seed=cfg.seed, steps=result.steps,
                           wall_seconds=round(time.perf_counter() - start, 2), config=resolved, meta=setup.meta)
            summary_phase(setup, results, students)
        exit_code = 0
        return results if distributed.is_main() else {}
    finally:
        tracker.finish(exit_code)
        distributed.shutdown()


def open_tracker(cfg: Config, resolved: Dict[str, Any], resume_from: Optional[Path]) -> Tracker:
    """The run's tracker on rank 0 (continuing the W&B run of a resumed one); a no-op elsewhere."""
    if not distributed.is_main():
        return NullTracker()
    return Tracker(cfg.logger, Path(cfg.output_dir), resolved, name=cfg.experiment_name,
                   group=cfg.logger.group or cfg.experiment_name, run_id=checkpoint.wandb_id(resume_from))


def reference_rows(setup: Setup) -> Dict[str, Any]:
    """The teacher's dev scores and, for a fixed label set (not STS-B's scores, nor ReCoRD's
    entities), those of always predicting the majority training label."""
    exp, task = setup.exp, setup.exp.task
    results: Dict[str, Any] = {"task": task.name, "metric": task.metric}
    results["teacher"] = {"name": exp.cfg.teacher.name, "params": count_params(setup.teacher.model),
                          "dev": exp.evaluate(setup.teacher.model, setup.evals)}
    results.update(ensemble_phases.dev_rows(setup, results["teacher"]["dev"]))  # several teachers: each, mixture
    if task.label_names:
        first = next(iter(setup.evals.values()))
        results["majority"] = {"dev": products.majority_metrics(task.name, np.asarray(setup.train_ds.labels),
                                                                first.examples)}
    return results


def baseline_phase(setup: Setup, results: Dict[str, Any], resume: Dict[str, Any]) -> Loaded:
    """The student trained on labels alone, as a reference row."""
    cfg = setup.exp.cfg
    base, result = setup.exp.fit_student(setup.teacher, setup.s_train, setup.s_evals, "student_baseline", **resume)
    results["baseline_student"] = {"name": cfg.student.name, "params": count_params(base.model),
                                   **products.summarise(result, cfg.trainer.select)}
    return base


def distillation_phase(setup: Setup, results: Dict[str, Any], students: Dict[str, Loaded],
                       resume: Dict[str, Any]) -> LoopResult:
    """The student distilled from the teacher's outputs (cached or live), or trained with
    a copy of the teacher in the online phase (``kdlab.online``, which trains both)."""
    exp, teacher, cfg = setup.exp, setup.teacher, setup.exp.cfg
    if online.enabled(cfg):  # the teacher trains on: a copy, so "teacher" stays the one it started from
        peer, outputs = replace(teacher, model=copy.deepcopy(teacher.model)), None
        student, result = exp.fit_student(teacher, setup.train_ds, setup.s_evals, online.PHASE, peer=peer, **resume)
    else:
        outputs = ensemble_phases.teacher_outputs(setup)  # on t_distill's rows; several teachers: combined
        student, result = exp.fit_student(teacher, setup.distill_ds, setup.s_evals, "student", outputs=outputs, **resume)
    if not distributed.is_main():  # rank 0 alone reports
        return result
    results["student"] = {"name": cfg.student.name, "params": count_params(student.model),
                          **products.summarise(result, cfg.trainer.select)}
    if isinstance(outputs, token_cache.TokenCachedTeacher):
        results["teacher_cache"] = outputs.report()
    if online.enabled(cfg):  # the co-trained teacher's scores come out of the same evaluations
        results["student"], peer_dev = online.split_dev(results["student"])
        results[online.PEER] = {"name": cfg.teacher.name, "method": cfg.online.method,
                                "params": count_params(peer.model), **peer_dev}
        students[online.PEER] = peer
    if result.on_policy is not None:  # trainer.on_policy: the schedule's last lmbda, the share generated
        results["on_policy"] = result.on_policy
    if setup.transfer_examples:
        results["transfer"] = {"name": cfg.transfer.name, "examples": len(setup.transfer_examples)}
    students["student"] = student
    return result


def summary_phase(setup: Setup, results: Dict[str, Any], students: Dict[str, Loaded]) -> None:
    """Saved students, footprints and savings, the tracker's summary, ``results.json`` and
    the end-of-run table (rank 0)."""
    exp = setup.exp
    sizes = {"train": len(setup.train_examples), **{k: len(v) for k, v in setup.eval_examples.items()}}
    products.finish(exp, results, setup.teacher, students, setup.evals, setup.s_evals, sizes)
    exp.tracker.log({f"dev/{who}/{k}": v for who in ("teacher", "student") for k, v in results[who]["dev"].items()})
    exp.tracker.summary({"dev_student": results["student"]["dev"], "dev_teacher": results["teacher"]["dev"]})
    write_json_atomic(Path(exp.cfg.output_dir) / RESULTS_FILE, results)
    print(format_table(results))
