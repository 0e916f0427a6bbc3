"""What a run reports and leaves: each trained model's summary of its evaluations, the
majority-class row, the saved students and what each one saves over the teacher. The
runner calls ``finish`` once, on rank 0, after training.

``results.json`` is a contract read by other tools: ``task``, ``metric``, ``teacher`` and
``student`` (each ``{"name", "params", "dev": {metric: value}}``), ``divergence``, ``seed``,
``steps``, ``wall_seconds``, ``config``; extensions ``student.dev_last`` / ``dev_best`` /
``evaluations`` (``summarise``), ``majority``, ``baseline_student``, ``meta``,
``<model>.footprint`` and ``reliability`` and ``savings`` (``finish``), ``transfer``
(``{"name", "examples"}`` with transfer data, ``kdlab.data.transfer``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping

import numpy as np

from kdlab import export, inference_bench
from kdlab.data import score
from kdlab.evaluate import reliability
from kdlab.trainer import LoopResult


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
