"""Paper tables from a sweep: ``kdlab-table <multirun dir> [--baseline ROW] [--reference FILE] [--out DIR]``.

Every job directory under the sweep is read (``runs``); the rows are what the sweep varies
besides the seed and the task (``rows``); columns are the tasks and their average, each cell
the task's main metric x100, mean ± sample std over the row's seeds, under two protocols:
``best`` (``student.dev_best``, the published SinKD protocol) and ``last``
(``student.dev_last``), both falling back to ``student.dev`` (``cells``). With a baseline
row, every row's paired difference from it and its 95% t interval (``kdlab.stats``).
Outputs ``<name>.md``, ``.tex``, ``.csv`` (``writers``) and ``.png`` (``plot``).
See docs/reproducing.md.
"""

from kdlab.tables import reliability
from kdlab.tables.cells import (
    AVERAGE,
    Cell,
    Table,
    build_table,
    compare_to_baseline,
    match_reference,
    read_reference,
)
from kdlab.tables.cli import main, write_all
from kdlab.tables.plot import plot
from kdlab.tables.rows import METHOD_NAMES, TEACHER, find_runs, task_label
from kdlab.tables.runs import PROTOCOLS, Run, TableError, planned_jobs
from kdlab.tables.writers import to_latex, to_markdown, write_csv

__all__ = ["AVERAGE", "METHOD_NAMES", "PROTOCOLS", "TEACHER", "Cell", "Run", "Table", "TableError", "build_table",
           "compare_to_baseline", "find_runs", "main", "match_reference", "planned_jobs", "plot", "read_reference", "reliability",
           "task_label", "to_latex", "to_markdown", "write_all", "write_csv"]
