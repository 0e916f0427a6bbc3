"""Paper tables from a sweep: ``kdlab-table <multirun dir> [--reference FILE] [--out DIR]``.

Every job directory under the sweep is read: one with a ``results.json`` is a finished run,
one with a ``.hydra/`` but no ``results.json`` a failed or unfinished run, counted and listed
rather than dropped. Rows are the teacher and the methods (a run's method is its config's
``--method-key``, by default ``experiment_name``, which every method preset sets), columns
the tasks and their average; each cell is the task's main metric x100, mean ± sample std
over seeds, under two protocols side by side: ``best`` (``student.dev_best``, the maximum
over a run's evaluations: the published SinKD protocol) and ``last`` (``student.dev_last``,
the last checkpoint); both fall back to ``student.dev``. Outputs ``<name>.md``, ``.tex``,
``.csv`` and ``.png``. See docs/reproducing.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from omegaconf import OmegaConf

from kdlab.tracking import RESULTS_FILE

PROTOCOLS: Tuple[Tuple[str, str], ...] = (("best", "dev_best"), ("last", "dev_last"))
AVERAGE = "average"
SCALE = 100.0  # metrics are reported as percentages, as in the papers
TEACHER = "teacher"  # a row of the teachers' scores, one per task and seed
# Display order and names of the method presets; other methods follow alphabetically.
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


class TableError(Exception):
    """A sweep that cannot be tabulated: no runs, or a run without the method key."""


def task_label(task: str) -> str:
    short = task.split("/")[-1]
    return TASK_NAMES.get(short, short.upper())


def method_label(method: str) -> str:
    return METHOD_NAMES.get(method, method)


@dataclass
class Run:
    """One job directory of the sweep: its method, task and seed, and its scores if it finished."""

    path: Path
    method: str
    task: str
    seed: int
    metric: Optional[str] = None
    scores: Dict[str, float] = field(default_factory=dict)  # protocol -> main metric
    teacher: Optional[float] = None

    @property
    def ok(self) -> bool:
        return bool(self.scores)


def _select(cfg: Mapping[str, Any], key: str, where: Path) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise TableError(f"{where}: the config has no key {key!r} (set --method-key to a key it has)")
        node = node[part]
    return node


def read_run(job_dir: Path, method_key: str) -> Run:
    """A finished run from ``results.json``, or a failed one from ``.hydra/config.yaml``."""
    results = job_dir / RESULTS_FILE
    if results.is_file():
        res = json.loads(results.read_text())
        cfg = res["config"]
        metric = res["metric"]
        student = res["student"]
        scores = {}
        for protocol, key in PROTOCOLS:
            dev = student.get(key, student["dev"])
            scores[protocol] = float(dev[metric]) * SCALE
        return Run(job_dir, str(_select(cfg, method_key, results)), res["task"], int(res["seed"]),
                   metric, scores, float(res["teacher"]["dev"][metric]) * SCALE)
    cfg_file = job_dir / ".hydra" / "config.yaml"
    cfg = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=False)
    return Run(job_dir, str(_select(cfg, method_key, cfg_file)), str(_select(cfg, "dataset.name", cfg_file)),
               int(_select(cfg, "seed", cfg_file)))


def planned_jobs(root: Path) -> Optional[int]:
    """Jobs a basic-sweeper multirun launched from ``root/multirun.yaml`` (None: unknown).

    Jobs that never started leave no directory; comparing this count with the directories
    found shows them even when a whole method or task is absent from the table."""
    path = root / "multirun.yaml"
    if not path.is_file():
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = OmegaConf.load(path).hydra
    if not str(OmegaConf.select(hydra_cfg, "sweeper._target_", default="")).endswith("BasicSweeper"):
        return None
    overrides = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    return math.prod(len(list(o.sweep_string_iterator())) for o in overrides if o.is_sweep_override())


def find_runs(root: Path, method_key: str = "experiment_name") -> List[Run]:
    """Every job directory under ``root``: one holding ``results.json`` or ``.hydra/``."""
    dirs = {p.parent for p in root.rglob(RESULTS_FILE)} | {p.parent for p in root.rglob(".hydra") if p.is_dir()}
    return [read_run(d, method_key) for d in sorted(dirs)]


@dataclass
class Cell:
    """One method x task (or average) entry under one protocol."""

    values: List[float]  # one per finished run
    expected: int  # seeds in the sweep
    failed: int = 0  # job directories without results
    reference: Optional[float] = None

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
    methods: List[str]
    tasks: List[str]  # task names, then AVERAGE
    metrics: Dict[str, str]  # task -> main metric
    cells: Dict[Tuple[str, str, str], Cell]  # (method, task, protocol)
    runs: List[Run]
    seeds: List[int]
    has_reference: bool = False
    planned: Optional[int] = None  # jobs the sweep launched, when multirun.yaml tells

    @property
    def failed(self) -> List[Run]:
        return [r for r in self.runs if not r.ok]

    def missing(self) -> List[Tuple[str, str, int]]:
        """(method, task, seed) of the grid with no job directory at all."""
        have = {(r.method, r.task, r.seed) for r in self.runs}
        return [(m, t, s) for m in self.methods if m != TEACHER for t in self.tasks if t != AVERAGE
                for s in self.seeds if (m, t, s) not in have]


def _order(methods: Sequence[str]) -> List[str]:
    known = [m for m in METHOD_NAMES if m in methods]
    return known + sorted(m for m in set(methods) if m not in METHOD_NAMES)


def build_table(runs: List[Run], reference: Optional[Dict[Tuple[str, str], float]] = None) -> Table:
    """Aggregate runs into cells: mean and std over seeds per method, task and protocol."""
    if not runs:
        raise TableError("no runs: no results.json and no .hydra/ directory under the sweep")
    # The teacher row: each task and seed's teacher score once (every run of it has the same).
    teachers = {(r.task, r.seed): r.teacher for r in runs if r.teacher is not None}
    runs = [*runs, *(Run(Path(), TEACHER, t, s, None, {p: v for p, _ in PROTOCOLS})
                     for (t, s), v in teachers.items())]
    methods = _order({r.method for r in runs})
    tasks = sorted({r.task for r in runs}, key=task_label)
    seeds = sorted({r.seed for r in runs})
    metrics = {r.task: r.metric for r in runs if r.metric}
    reference = reference or {}
    cells: Dict[Tuple[str, str, str], Cell] = {}
    for m in methods:
        for protocol, _ in PROTOCOLS:
            per_seed: Dict[int, List[float]] = {}  # seed -> the task values, for the average
            for t in tasks:
                mine = [r for r in runs if r.method == m and r.task == t]
                ok = [r for r in mine if r.ok]
                cells[m, t, protocol] = Cell([r.scores[protocol] for r in ok], len(seeds),
                                             failed=len(mine) - len(ok), reference=reference.get((m, t)))
                for r in ok:
                    per_seed.setdefault(r.seed, []).append(r.scores[protocol])
            complete = all(cells[m, t, protocol].values for t in tasks)
            # The average of a seed needs that seed on every task; the mean of the average
            # is the mean over those seeds, so mean and std describe the same numbers.
            avg = [statistics.fmean(v) for v in per_seed.values() if len(v) == len(tasks)] if complete else []
            ref = [reference.get((m, t)) for t in tasks]
            cells[m, AVERAGE, protocol] = Cell(
                avg, len(seeds), failed=sum(cells[m, t, protocol].failed for t in tasks),
                reference=statistics.fmean(ref) if all(v is not None for v in ref) else None)
    return Table(methods, [*tasks, AVERAGE], metrics, cells, [r for r in runs if r.method != TEACHER], seeds,
                 has_reference=bool(reference))


def read_reference(path: Path) -> Dict[Tuple[str, str], float]:
    """Reference numbers keyed by (method, task); task as ``glue/sst2`` or its label ``SST-2``."""
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        rows = [(m, t, v) for m, per_task in data.items() for t, v in per_task.items()]
    else:
        with path.open(newline="") as f:
            rows = [(r["method"], r["task"], r["value"]) for r in csv.DictReader(f)]
    return {(m, t): float(v) for m, t, v in rows}


def _match_reference(ref: Dict[Tuple[str, str], float], runs: List[Run]) -> Dict[Tuple[str, str], float]:
    """Map reference tasks given by label (``SST-2``) onto the run's task names."""
    by_label = {task_label(r.task): r.task for r in runs}
    return {(m, by_label.get(t, t)): v for (m, t), v in ref.items()}


# -- writers ----------------------------------------------------------------------------------
def _header(t: str, table: Table) -> str:
    return "Average" if t == AVERAGE else task_label(t)


def _summary(table: Table) -> str:
    ok = sum(r.ok for r in table.runs)
    planned = "" if table.planned is None else f"{table.planned} jobs planned, {len(table.runs)} job directories: "
    return (f"{planned}{ok} runs with results, {len(table.failed)} failed or unfinished, "
            f"{len(table.missing())} missing (method x task x seed with no job directory); "
            f"seeds {', '.join(map(str, table.seeds))}")


def to_markdown(table: Table, title: str, source: str) -> str:
    cols = [f"{_header(t, table)} {p}" for t in table.tasks for p, _ in PROTOCOLS]
    lines = [f"# {title}", "", f"Sweep: `{source}`. {_summary(table)}.", "",
             "Main metric x100 per task, mean ± sample std over seeds; **best** = maximum over "
             "the evaluations of a run (published protocol), **last** = last checkpoint. "
             "`(k/n)`: only k of the n seeds finished.", "",
             "| Method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for m in table.methods:
        row = [table.cells[m, t, p].text() for t in table.tasks for p, _ in PROTOCOLS]
        lines.append(f"| {method_label(m)} | " + " | ".join(row) + " |")
    lines += ["", "Metrics: " + ", ".join(f"{task_label(t)} {table.metrics.get(t, '?')}"
                                          for t in table.tasks if t != AVERAGE) + "."]
    if table.has_reference:
        cols = [f"{_header(t, table)} {c}" for t in table.tasks for c in ("ref", "Δ best", "Δ last")]
        lines += ["", "## Difference from the reference", "",
                  "| Method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for m in table.methods:
            row = []
            for t in table.tasks:
                best, last = table.cells[m, t, "best"], table.cells[m, t, "last"]
                row += [_num(best.reference), _num(best.diff, signed=True), _num(last.diff, signed=True)]
            lines.append(f"| {method_label(m)} | " + " | ".join(row) + " |")
    unstarted = (table.planned or 0) - len(table.runs)
    if table.failed or table.missing() or unstarted > 0:
        lines += ["", "## Gaps", ""]
        if unstarted > 0:
            lines.append(f"- {unstarted} planned jobs never started (no job directory)")
        lines += [f"- failed or unfinished: {r.method} / {r.task} / seed {r.seed} (`{r.path}`)" for r in table.failed]
        lines += [f"- missing: {m} / {t} / seed {s}" for m, t, s in table.missing()]
    return "\n".join(lines) + "\n"


def _num(x: Optional[float], signed: bool = False) -> str:
    return "–" if x is None else (f"{x:+.1f}" if signed else f"{x:.1f}")


def _tex(s: str) -> str:
    return s.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def to_latex(table: Table, title: str) -> str:
    n = len(table.tasks)
    head = " & ".join(rf"\multicolumn{{2}}{{c}}{{{_tex(_header(t, table))}}}" for t in table.tasks)
    rules = " ".join(rf"\cmidrule(lr){{{2 + 2 * i}-{3 + 2 * i}}}" for i in range(n))
    sub = " & ".join(["best & last"] * n)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{_tex(title)}: main metric $\times 100$, mean $\pm$ std over seeds; "
             r"best = maximum over evaluations, last = last checkpoint.}",
             r"\begin{tabular}{l" + "cc" * n + "}", r"\toprule",
             rf"Method & {head} \\", rules, rf" & {sub} \\", r"\midrule"]
    for m in table.methods:
        row = [_tex(table.cells[m, t, p].text(pm=r" $\pm$ ", dash="--")) for t in table.tasks for p, _ in PROTOCOLS]
        lines.append(f"{_tex(method_label(m))} & " + " & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("method", "task", "metric", "protocol", "mean", "std", "n", "expected", "failed",
              "values", "reference", "diff")


def write_csv(table: Table, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for m in table.methods:
            for t in table.tasks:
                for p, _ in PROTOCOLS:
                    c = table.cells[m, t, p]
                    w.writerow({"method": m, "task": t, "metric": table.metrics.get(t, ""), "protocol": p,
                                "mean": _csv(c.mean), "std": _csv(c.std), "n": len(c.values),
                                "expected": c.expected, "failed": c.failed,
                                "values": ";".join(f"{v:.4f}" for v in c.values),
                                "reference": _csv(c.reference), "diff": _csv(c.diff)})


def _csv(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.4f}"


def plot(table: Table, path: Path, title: str) -> None:
    """Per-task metric by method: one panel per task, best and last side by side, std bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = table.tasks
    fig, axes = plt.subplots(1, len(tasks), figsize=(1.0 + 0.55 * len(table.methods) * len(tasks), 3.6),
                             squeeze=False)
    x = list(range(len(table.methods)))
    for ax, t in zip(axes[0], tasks, strict=True):
        for k, (p, _) in enumerate(PROTOCOLS):
            cells = [table.cells[m, t, p] for m in table.methods]
            means = [c.mean if c.mean is not None else math.nan for c in cells]
            stds = [c.std if c.std is not None else math.nan for c in cells]  # no bar for one seed
            xs = [i + (k - 0.5) * 0.38 for i in x]
            ax.bar(xs, means, width=0.38, yerr=stds, capsize=2, label=p, alpha=0.85)
            for xi, c in zip(xs, cells, strict=True):  # gaps and incomplete cells stay visible
                if len(c.values) != c.expected:
                    ax.annotate("gap" if c.mean is None else f"{len(c.values)}/{c.expected}", (xi, 0),
                                xycoords=("data", "axes fraction"), ha="center", va="bottom",
                                fontsize=6, color="red", rotation=90)
        ref = [table.cells[m, t, "best"].reference for m in table.methods]
        if any(r is not None for r in ref):
            ax.scatter(x, [math.nan if r is None else r for r in ref], marker="_", s=200, c="k",
                       label="reference", zorder=3)
        ends = [c.mean + sign * (c.std or 0.0) for m in table.methods for p, _ in PROTOCOLS
                for c in [table.cells[m, t, p]] if c.mean is not None for sign in (-1, 1)]
        if ends:
            lo, hi = min(ends), max(ends)
            pad = max(1.0, 0.1 * (hi - lo))
            ax.set_ylim(lo - 2 * pad, hi + pad)
        metric = table.metrics.get(t, "") if t != AVERAGE else "mean over tasks"
        ax.set_title(f"{_header(t, table)} ({metric})", fontsize=9)
        ax.set_xticks(x, [method_label(m) for m in table.methods], rotation=45, ha="right", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("dev metric x100")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_all(table: Table, out: Path, name: str, title: str, source: str) -> Dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"{name}.{ext}" for ext in ("md", "tex", "csv", "png")}
    paths["md"].write_text(to_markdown(table, title, source))
    paths["tex"].write_text(to_latex(table, title))
    write_csv(table, paths["csv"])
    plot(table, paths["png"], title)
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="kdlab-table", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path, help="a multirun directory (hydra.sweep.dir)")
    ap.add_argument("--reference", type=Path, help="reference numbers: CSV method,task,value or JSON")
    ap.add_argument("--out", type=Path, help="output directory (default: the sweep directory)")
    ap.add_argument("--name", default="table", help="file stem of the outputs (default: table)")
    ap.add_argument("--title", help="table title (default: the sweep directory's name)")
    ap.add_argument("--method-key", default="experiment_name",
                    help="dotted config key naming a run's method (default: experiment_name)")
    args = ap.parse_args(argv)
    if not args.sweep.is_dir():
        print(f"kdlab-table: error: {args.sweep} is not a directory", file=sys.stderr)
        return 2
    try:
        runs = find_runs(args.sweep, args.method_key)
        ref = _match_reference(read_reference(args.reference), runs) if args.reference else None
        table = build_table(runs, ref)
        table.planned = planned_jobs(args.sweep)
    except (TableError, OSError, ValueError, KeyError) as e:
        print(f"kdlab-table: error: {e}", file=sys.stderr)
        return 2
    title = args.title or f"kdlab sweep {args.sweep.name}"
    paths = write_all(table, args.out or args.sweep, args.name, title, str(args.sweep))
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
