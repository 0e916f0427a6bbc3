"""The table as Markdown, LaTeX (booktabs) and long-format CSV."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Callable, List, Optional

from kdlab.stats import LEVEL, PairedDifference
from kdlab.tables.cells import AVERAGE, Table
from kdlab.tables.rows import task_label
from kdlab.tables.runs import PROTOCOLS

NA = "n/a"


def header(t: str) -> str:
    return "Average" if t == AVERAGE else task_label(t)


def _num(x: Optional[float], signed: bool = False) -> str:
    return "–" if x is None else (f"{x:+.1f}" if signed else f"{x:.1f}")


def _pairs(table: Table) -> int:
    """The most common number of paired seeds; cells with another count say theirs."""
    counts = Counter(d.n for (m, _, _), d in table.paired.items() if m != table.baseline and d.n)
    return counts.most_common(1)[0][0] if counts else 0


def paired_text(d: PairedDifference, usual_n: int, strong: Callable[[str], str], minus: str = "-") -> str:
    """``+1.2 [+0.4, +2.0]``, set with ``strong`` when the interval excludes 0; ``n/a``
    where fewer than 2 seeds pair up (the point difference is kept when 1 does)."""
    if d.mean is None:
        return NA
    if d.low is None or d.high is None:
        out = f"{d.mean:+.1f} [{NA}]"
    else:
        out = f"{d.mean:+.1f} [{d.low:+.1f}, {d.high:+.1f}]"
    out = out.replace("-", minus)
    if d.n != usual_n:
        out += f" (n={d.n})"
    return strong(out) if d.significant else out


def paired_caption(table: Table) -> str:
    n = _pairs(table)
    return (f"Paired difference from {table.label(table.baseline or '')}: row minus baseline, main metric "
            f"x100, mean over the seeds both rows finished (n = {n} unless a cell says otherwise), with its "
            f"{LEVEL:.0%} confidence interval from the paired t distribution (mean ± t_(0.975, n-1) · "
            f"sd / sqrt(n), quantile from scipy.stats.t). Bold: the interval excludes 0, so the rows "
            f"differ at this level on this task and protocol. {NA}: fewer than 2 paired seeds, no interval.")


def _summary(table: Table) -> str:
    ok = sum(r.ok for r in table.runs)
    planned = "" if table.planned is None else f"{table.planned} jobs planned, {len(table.runs)} job directories: "
    return (f"{planned}{ok} runs with results, {len(table.failed)} failed or unfinished, "
            f"{len(table.missing())} missing (row x task x seed with no job directory); "
            f"seeds {', '.join(map(str, table.seeds))}")


def _md_table(table: Table, cols: List[str], row: Callable[[str], List[str]]) -> List[str]:
    lines = ["| Method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    return lines + [f"| {table.label(m)} | " + " | ".join(row(m)) + " |" for m in table.methods]


def to_markdown(table: Table, title: str, source: str) -> str:
    cols = [f"{header(t)} {p}" for t in table.tasks for p, _ in PROTOCOLS]
    lines = [f"# {title}", "", f"Sweep: `{source}`. {_summary(table)}.",
             *([f"Rows: {table.rows_by}."] if table.rows_by else []), "",
             "Main metric x100 per task, mean ± sample std over seeds; **best** = maximum over "
             "the evaluations of a run (published protocol), **last** = last checkpoint. "
             "`(k/n)`: only k of the row's n seeds finished.", "",
             *_md_table(table, cols, lambda m: [table.cells[m, t, p].text() for t in table.tasks for p, _ in PROTOCOLS])]
    lines += ["", "Metrics: " + ", ".join(f"{task_label(t)} {table.metrics.get(t, '?')}"
                                          for t in table.tasks if t != AVERAGE) + "."]
    if table.baseline is not None:
        n = _pairs(table)
        lines += ["", f"## Difference from {table.label(table.baseline)}", "", paired_caption(table), "",
                  *_md_table(table, cols, lambda m: [
                      "baseline" if m == table.baseline else
                      paired_text(table.paired[m, t, p], n, lambda s: f"**{s}**")
                      for t in table.tasks for p, _ in PROTOCOLS])]
    if table.has_reference:
        ref_cols = [f"{header(t)} {c}" for t in table.tasks for c in ("ref", "Δ best", "Δ last")]
        lines += ["", "## Difference from the reference", "",
                  *_md_table(table, ref_cols, lambda m: [
                      x for t in table.tasks for x in (_num(table.cells[m, t, "best"].reference),
                                                       _num(table.cells[m, t, "best"].diff, signed=True),
                                                       _num(table.cells[m, t, "last"].diff, signed=True))])]
    unstarted = (table.planned or 0) - len(table.runs)
    if table.failed or table.missing() or unstarted > 0:
        lines += ["", "## Gaps", ""]
        if unstarted > 0:
            lines.append(f"- {unstarted} planned jobs never started (no job directory)")
        lines += [f"- failed or unfinished: {r.row} / {r.task} / seed {r.seed} (`{r.path}`)" for r in table.failed]
        lines += [f"- missing: {m} / {t} / seed {s}" for m, t, s in table.missing()]
    return "\n".join(lines) + "\n"


def _tex(s: str) -> str:
    return s.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def _tex_tabular(table: Table, caption: str, cell: Callable[[str, str, str], str]) -> List[str]:
    n = len(table.tasks)
    head = " & ".join(rf"\multicolumn{{2}}{{c}}{{{_tex(header(t))}}}" for t in table.tasks)
    rules = " ".join(rf"\cmidrule(lr){{{2 + 2 * i}-{3 + 2 * i}}}" for i in range(n))
    sub = " & ".join(["best & last"] * n)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{caption}}}",
             r"\begin{tabular}{l" + "cc" * n + "}", r"\toprule",
             rf"Method & {head} \\", rules, rf" & {sub} \\", r"\midrule"]
    for m in table.methods:
        row = [cell(m, t, p) for t in table.tasks for p, _ in PROTOCOLS]
        lines.append(f"{_tex(table.label(m))} & " + " & ".join(row) + r" \\")
    return lines + [r"\bottomrule", r"\end{tabular}", r"\end{table}"]


def to_latex(table: Table, title: str) -> str:
    lines = _tex_tabular(
        table, rf"{_tex(title)}: main metric $\times 100$, mean $\pm$ std over seeds; "
               r"best = maximum over evaluations, last = last checkpoint.",
        lambda m, t, p: _tex(table.cells[m, t, p].text(pm=r" $\pm$ ", dash="--")))
    if table.baseline is not None:
        n = _pairs(table)
        caption = _tex(paired_caption(table)).replace("±", r"$\pm$").replace("·", r"$\cdot$")
        lines += ["", *_tex_tabular(
            table, caption, lambda m, t, p: "baseline" if m == table.baseline else
            paired_text(table.paired[m, t, p], n, lambda s: rf"\textbf{{{s}}}", minus="$-$"))]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("method", "task", "metric", "protocol", "mean", "std", "n", "expected", "failed",
              "values", "reference", "diff", "baseline", "paired_n", "paired_diff", "ci_low", "ci_high",
              "significant")


def write_csv(table: Table, path: Path) -> None:
    """Long format: one line per row, task and protocol; the paired columns are empty
    without ``--baseline`` and the interval ones under 2 paired seeds."""
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for m in table.methods:
            for t in table.tasks:
                for p, _ in PROTOCOLS:
                    c = table.cells[m, t, p]
                    d = table.paired.get((m, t, p))
                    w.writerow({"method": m, "task": t, "metric": table.metrics.get(t, ""), "protocol": p,
                                "mean": _csv(c.mean), "std": _csv(c.std), "n": len(c.values),
                                "expected": c.expected, "failed": c.failed,
                                "values": ";".join(f"{v:.4f}" for v in c.values),
                                "reference": _csv(c.reference), "diff": _csv(c.diff),
                                "baseline": table.baseline or "", "paired_n": "" if d is None else d.n,
                                "paired_diff": _csv(d.mean if d else None), "ci_low": _csv(d.low if d else None),
                                "ci_high": _csv(d.high if d else None),
                                "significant": "" if d is None or d.low is None else int(d.significant)})


def _csv(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.4f}"
