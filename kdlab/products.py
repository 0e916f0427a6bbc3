"""What a run leaves besides its reports: the saved students and what each one saves
over the teacher. The runner calls ``finish`` once, on rank 0, after training."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

from kdlab import export, inference_bench
from kdlab.evaluate import reliability


def finish(exp: Any, results: Dict[str, Any], teacher: Any, students: Mapping[str, Any],
           evals: Mapping[str, Any], s_evals: Mapping[str, Any], data_sizes: Mapping[str, int]) -> None:
    """Save ``students`` (``{role: Loaded}``) under the run dir unless
    ``trainer.save_student=false``, then add each model's ``footprint`` (params, weights
    size, latency, throughput), its ``reliability`` bins on the first dev split (classification)
    and the teacher/student ``savings`` to ``results``."""
    cfg = exp.cfg
    saved: Dict[str, Path] = {}
    if cfg.trainer.save_student:
        saved = export.save_students(Path(cfg.output_dir), cfg, exp.task, exp.family.name, students,
                                     results, data_sizes)
    split = next(iter(evals))  # the same examples for every model, each in its own tokenisation
    bench = inference_bench.measure(
        exp.family, {"teacher": teacher.model, **{r: s.model for r, s in students.items()}},
        {"teacher": evals[split], **{r: s_evals[split] for r in students}},
        cfg.trainer.eval_batch_size, exp.device, exp.precision, saved)
    for role in ("teacher", *students):
        results[role]["footprint"] = bench[role]
        model, ds = (teacher.model, evals[split]) if role == "teacher" else (students[role].model, s_evals[split])
        bins = reliability(exp.family, exp.task.name, model, ds, cfg.trainer.eval_batch_size, exp.device,
                           exp.precision)
        if bins is not None:  # classification: the reliability diagram of the model as left
            results[role]["reliability"] = {"split": split, **bins}
    results["savings"] = bench["savings"]
