"""The rows of a sweep's table: what differs between its jobs, other than the seed and the task.

A multirun is a grid; its columns are the tasks and its repeats the seeds, so a row is one
value of everything else that the sweep varies. Each job's ``.hydra/overrides.yaml`` says
what was typed for it; the override keys whose value differs between jobs, less ``seed``
and the override naming the task (``experiment/sinkd/glue/task=sst2``, ``dataset=glue/rte``),
tell the rows apart. ``kdlab -m experiment=smoke divergence=kl,sinkhorn seed=0,1`` gives
rows ``kl`` and ``sinkhorn``. Where the resolved ``experiment_name`` tells the same rows
apart (the method presets ``experiment/sinkd/method=kd,...`` set it), it names them, with
the display names below; a sweep where nothing but the seed varies has one row, named by
its ``experiment_name``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from kdlab.metadata import DONE_FREE, is_free
from kdlab.tables.runs import Run, job_dirs, read_run, select

TEACHER = "teacher"  # a row of the teachers' scores, one per task and seed
SEED_KEY = "seed"
NAME_KEY = "experiment_name"
# Display order and names of the method presets; other rows follow in the sweep's order.
METHOD_NAMES = {
    TEACHER: "Teacher",
    "finetune": "Student (no teacher)",
    "kd": "KD",
    "rkl": "RKL",
    "js": "JS",
    "tvd": "TVD",
    "sinkd": "SinKD (faithful)",
    "sinkd_sound": "SinKD (sound)",
}
TASK_NAMES = {"cola": "CoLA", "sst2": "SST-2", "stsb": "STS-B", "boolq": "BoolQ", "multirc": "MultiRC",
              "record": "ReCoRD", "wic": "WiC", "axb": "AX-b", "axg": "AX-g"}


def task_label(task: str) -> str:
    short = task.split("/")[-1]
    return TASK_NAMES.get(short, short.upper())


def _names_task(value: Optional[str], task: str) -> bool:
    return value is not None and value in (task, task.split("/")[-1])


def varying_keys(runs: Sequence[Run]) -> List[str]:
    """Override keys whose value differs between jobs, in the order typed, except the seed,
    an override that names each job's task (the tasks are the columns) and the keys that do
    not change what a job computes (``kdlab.metadata.DONE_FREE``: threads, progress bar,
    logger, cache and data directories), so a study resumed with other such settings keeps
    its rows."""
    keys: List[str] = []
    for r in runs:
        keys += [k for k in r.overrides or {} if k not in keys]
    out = []
    for k in keys:
        values = [(r.overrides or {}).get(k) for r in runs]
        if k == SEED_KEY or len(set(values)) < 2 or is_free(k.lstrip("+~"), DONE_FREE):
            continue
        if all(_names_task(v, r.task) for v, r in zip(values, runs, strict=True)):
            continue
        out.append(k)
    return out


def _name(r: Run) -> str:
    return str(select(r.config, NAME_KEY, r.path))


def assign_rows(runs: Sequence[Run], method_key: Optional[str] = None) -> None:
    """Set every run's ``row``, its display ``label`` and ``rows_by`` (what the rows are, for
    the caption). Method names are shown with ``METHOD_NAMES``, override values as typed."""
    if method_key is not None:
        return _set(runs, [str(select(r.config, method_key, r.path)) for r in runs], True,
                    f"the config key `{method_key}`")
    if any(r.overrides is None for r in runs):
        return _set(runs, [_name(r) for r in runs], True,
                    f"`{NAME_KEY}` (some job directories have no .hydra/overrides.yaml)")
    keys = varying_keys(runs)
    if not keys:
        return _set(runs, [_name(r) for r in runs], True,
                    f"`{NAME_KEY}` (nothing but the seed and the task differs between jobs)")
    combos: Dict[Tuple[Optional[str], ...], Set[str]] = {}
    for r in runs:
        combos.setdefault(tuple((r.overrides or {}).get(k) for k in keys), set()).add(_name(r))
    names = [n for ns in combos.values() for n in ns]
    by_name = all(len(ns) == 1 for ns in combos.values()) and len(set(names)) == len(combos)
    what = ", ".join(f"`{k}`" for k in keys)
    if by_name:
        return _set(runs, [_name(r) for r in runs], True, f"`{NAME_KEY}`, one per value of the overrides {what}")
    rows = []
    for r in runs:
        values = [_text((r.overrides or {}).get(k)) for k in keys]
        rows.append(values[0] if len(keys) == 1 else ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True)))
    return _set(runs, rows, False, f"the overrides {what}: what differs between jobs besides the seed and the task")


def _set(runs: Sequence[Run], rows: Sequence[str], method_names: bool, rows_by: str) -> None:
    for r, row in zip(runs, rows, strict=True):
        r.row, r.label, r.rows_by = row, row_label(row, method_names), rows_by


def _text(value: Optional[str]) -> str:
    return "(default)" if value is None else value


def find_runs(root: Path, method_key: Optional[str] = None, metric: Optional[str] = None) -> List[Run]:
    """Every job directory under ``root``, each with its row set (see :func:`assign_rows`);
    ``metric``: the dev metric tabulated (default: each task's main metric)."""
    runs = [read_run(d, metric) for d in job_dirs(root)]
    assign_rows(runs, method_key)
    return runs


def order_rows(rows: Sequence[str]) -> List[str]:
    """Teacher and method presets in their display order, then the others as first seen."""
    known = [m for m in METHOD_NAMES if m in rows]
    rest: List[str] = []
    for m in rows:
        if m not in METHOD_NAMES and m not in rest:
            rest.append(m)
    return known + rest


def row_label(row: str, method_names: bool) -> str:
    return METHOD_NAMES.get(row, row) if method_names or row == TEACHER else row
