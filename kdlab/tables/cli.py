"""``kdlab-table``: read a sweep, build its table, write every format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

from kdlab.tables.cells import Table, build_table, match_reference, read_reference
from kdlab.tables.plot import plot
from kdlab.tables.reliability import plot_reliability
from kdlab.tables.rows import find_runs
from kdlab.tables.runs import TableError, planned_jobs
from kdlab.tables.writers import to_latex, to_markdown, write_csv

DESCRIPTION = "Paper tables from a sweep: one row per setting the sweep varies, one column per task."


def write_all(table: Table, out: Path, name: str, title: str, source: str) -> Dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"{name}.{ext}" for ext in ("md", "tex", "csv", "png")}
    paths["md"].write_text(to_markdown(table, title, source))
    paths["tex"].write_text(to_latex(table, title))
    write_csv(table, paths["csv"])
    plot(table, paths["png"], title)
    if plot_reliability(table.runs, out / f"{name}_reliability.png", title):
        paths["reliability"] = out / f"{name}_reliability.png"
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="kdlab-table", description=DESCRIPTION)
    ap.add_argument("sweep", type=Path, help="a multirun directory (hydra.sweep.dir)")
    ap.add_argument("--baseline", metavar="ROW",
                    help="add each row's paired difference from this row (id or name, e.g. kd, KD, kl), "
                         "with a 95%% t interval; bold where it excludes 0")
    ap.add_argument("--reference", type=Path, help="reference numbers: CSV method,task,value or JSON")
    ap.add_argument("--out", type=Path, help="output directory (default: the sweep directory)")
    ap.add_argument("--name", default="table", help="file stem of the outputs (default: table)")
    ap.add_argument("--title", help="table title (default: the sweep directory's name)")
    ap.add_argument("--method-key", default=None,
                    help="dotted config key naming a run's row, e.g. experiment_name (default: the "
                         "overrides that differ between the sweep's jobs, besides seed and task)")
    ap.add_argument("--metric", default=None,
                    help="the dev metric tabulated, e.g. ece (expected calibration error; its 'best' "
                         "protocol is the lowest over evaluations); default: each task's main metric")
    args = ap.parse_args(argv)
    if not args.sweep.is_dir():
        print(f"kdlab-table: error: {args.sweep} is not a directory", file=sys.stderr)
        return 2
    try:
        runs = find_runs(args.sweep, args.method_key, args.metric)
        ref = match_reference(read_reference(args.reference), runs) if args.reference else None
        table = build_table(runs, ref, args.baseline)
        table.planned = planned_jobs(args.sweep)
    except (TableError, OSError, ValueError, KeyError) as e:
        print(f"kdlab-table: error: {e}", file=sys.stderr)
        return 2
    title = args.title or f"kdlab sweep {args.sweep.name}"
    paths = write_all(table, args.out or args.sweep, args.name, title, str(args.sweep))
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
