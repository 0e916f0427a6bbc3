"""The table's numbers: per row, task and protocol, the scores over seeds, their mean and
std, the difference from reference numbers and the paired difference from a baseline row."""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from kdlab.stats import PairedDifference, paired_difference
from kdlab.tables.rows import TEACHER, order_rows, row_label, task_label
from kdlab.tables.runs import PROTOCOLS, Run, TableError

AVERAGE = "average"


@dataclass
class Cell:
    """One row x task (or average) entry under one protocol: one value per finished seed."""

    values: List[float]
    expected: int  # seeds of the row's jobs
    failed: int = 0  # job directories without results
    reference: Optional[float] = None
    seeds: List[int] = field(default_factory=list)  # the seed of each value

    @property
    def by_seed(self) -> Dict[int, float]:
        return dict(zip(self.seeds, self.values, strict=True))

    @property
    def mean(self) -> Optional[float]:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> Optional[float]:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def diff(self) -> Optional[float]:
        return None if self.mean is None or self.reference is None else self.mean - self.reference

    def text(self, pm: str = " ± ", dash: str = "–") -> str:
        if self.mean is None:
            return dash if not self.failed else f"{dash} ({self.failed} failed)"
        out = f"{self.mean:.1f}" + (f"{pm}{self.std:.1f}" if self.std is not None else "")
        if len(self.values) != self.expected:
            out += f" ({len(self.values)}/{self.expected})"
        return out


@dataclass
class Table:
    methods: List[str]  # the row ids, teacher first (named "methods" since the method presets)
    tasks: List[str]  # task names, then AVERAGE
    metrics: Dict[str, str]  # task -> main metric
    cells: Dict[Tuple[str, str, str], Cell]  # (row, task, protocol)
    runs: List[Run]
    seeds: List[int]
    labels: Dict[str, str] = field(default_factory=dict)  # row -> display name
    rows_by: str = ""  # what the rows are
    has_reference: bool = False
    planned: Optional[int] = None  # jobs the sweep launched, when multirun.yaml tells
    baseline: Optional[str] = None
    paired: Dict[Tuple[str, str, str], PairedDifference] = field(default_factory=dict)  # row - baseline

    @property
    def failed(self) -> List[Run]:
        return [r for r in self.runs if not r.ok]

    def label(self, row: str) -> str:
        return self.labels.get(row, row)

    def missing(self) -> List[Tuple[str, str, int]]:
        """(row, task, seed) of the grid with no job directory at all."""
        have = {(r.row, r.task, r.seed) for r in self.runs}
        return [(m, t, s) for m in self.methods if m != TEACHER for t in self.tasks if t != AVERAGE
                for s in self.seeds if (m, t, s) not in have]


def _check_one_run_per_seed(runs: Sequence[Run]) -> None:
    """Two finished runs of one row, task and seed would count one seed twice: refuse."""
    counts = Counter((r.row, r.task, r.seed) for r in runs if r.ok)
    for (row, task, seed), n in counts.items():
        if n > 1:
            dirs = ", ".join(str(r.path) for r in runs if r.ok and (r.row, r.task, r.seed) == (row, task, seed))
            raise TableError(f"{n} finished runs of row {row!r}, task {task}, seed {seed} ({dirs}): their rows "
                             "cannot be told apart; point kdlab-table at one sweep, or drop --method-key")


def find_row(table: Table, name: str) -> str:
    """A row by id or display name (``kd`` or ``KD``); an unknown name lists the rows."""
    for m in table.methods:
        if name in (m, table.label(m)):
            return m
    lowered = [m for m in table.methods if name.lower() in (m.lower(), table.label(m).lower())]
    if len(lowered) == 1:
        return lowered[0]
    raise TableError(f"--baseline {name!r} is not a row of this sweep; rows: {', '.join(table.methods)}")


def compare_to_baseline(table: Table, baseline: str) -> None:
    """Fill ``table.paired``: every row's paired difference from the baseline row, per task
    (and the average) and protocol, over the seeds both rows finished."""
    table.baseline = find_row(table, baseline)
    table.paired = {(m, t, p): paired_difference(table.cells[m, t, p].by_seed,
                                                 table.cells[table.baseline, t, p].by_seed)
                    for m in table.methods for t in table.tasks for p, _ in PROTOCOLS}


def build_table(runs: List[Run], reference: Optional[Dict[Tuple[str, str], float]] = None,
                baseline: Optional[str] = None) -> Table:
    """Aggregate runs into cells: mean and std over seeds per row, task and protocol."""
    if not runs:
        raise TableError("no runs: no results.json and no .hydra/ directory under the sweep")
    _check_one_run_per_seed(runs)
    # The teacher row: each task and seed's teacher score once (every run of it has the same).
    teachers = {(r.task, r.seed): r.teacher for r in runs if r.teacher is not None}
    runs = [*runs, *(Run(Path(), t, s, {}, None, None, {p: v for p, _ in PROTOCOLS}, row=TEACHER,
                         label=row_label(TEACHER, True)) for (t, s), v in teachers.items())]
    methods = order_rows([r.row for r in runs])
    tasks = sorted({r.task for r in runs}, key=task_label)
    seeds = sorted({r.seed for r in runs})
    metrics = {r.task: r.metric for r in runs if r.metric}
    reference = reference or {}
    cells: Dict[Tuple[str, str, str], Cell] = {}
    for m in methods:
        expected = len({r.seed for r in runs if r.row == m})
        for protocol, _ in PROTOCOLS:
            per_seed: Dict[int, List[float]] = {}  # seed -> the task values, for the average
            for t in tasks:
                mine = [r for r in runs if r.row == m and r.task == t]
                ok = sorted((r for r in mine if r.ok), key=lambda r: r.seed)
                cells[m, t, protocol] = Cell([r.scores[protocol] for r in ok], expected, failed=len(mine) - len(ok),
                                             reference=reference.get((m, t)), seeds=[r.seed for r in ok])
                for r in ok:
                    per_seed.setdefault(r.seed, []).append(r.scores[protocol])
            complete = all(cells[m, t, protocol].values for t in tasks)
            # The average of a seed needs that seed on every task; the mean of the average
            # is the mean over those seeds, so mean and std describe the same numbers.
            avg = {s: statistics.fmean(v) for s, v in sorted(per_seed.items()) if len(v) == len(tasks)} if complete else {}
            ref = [reference.get((m, t)) for t in tasks]
            cells[m, AVERAGE, protocol] = Cell(
                list(avg.values()), expected, failed=sum(cells[m, t, protocol].failed for t in tasks),
                reference=statistics.fmean(ref) if all(v is not None for v in ref) else None, seeds=list(avg))
    table = Table(methods, [*tasks, AVERAGE], metrics, cells, [r for r in runs if r.row != TEACHER], seeds,
                  labels={r.row: r.label for r in runs}, rows_by=next((r.rows_by for r in runs if r.rows_by), ""),
                  has_reference=bool(reference))
    if baseline is not None:
        compare_to_baseline(table, baseline)
    return table


def read_reference(path: Path) -> Dict[Tuple[str, str], float]:
    """Reference numbers keyed by (row, task); task as ``glue/sst2`` or its label ``SST-2``."""
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        rows = [(m, t, v) for m, per_task in data.items() for t, v in per_task.items()]
    else:
        with path.open(newline="") as f:
            rows = [(r["method"], r["task"], r["value"]) for r in csv.DictReader(f)]
    return {(m, t): float(v) for m, t, v in rows}


def match_reference(ref: Dict[Tuple[str, str], float], runs: List[Run]) -> Dict[Tuple[str, str], float]:
    """Map reference tasks given by label (``SST-2``) onto the runs' task names."""
    by_label = {task_label(r.task): r.task for r in runs}
    return {(m, by_label.get(t, t)): v for (m, t), v in ref.items()}
