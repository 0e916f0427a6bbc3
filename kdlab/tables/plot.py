"""The table as a figure: one panel per task, best and last bars per row with std bars; with a
baseline, a second line of panels with each row's paired difference and its 95% interval."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Optional

from kdlab.stats import LEVEL
from kdlab.tables.cells import AVERAGE, Table
from kdlab.tables.runs import PROTOCOLS
from kdlab.tables.writers import header

WIDTH = 0.38  # of one protocol's bar


def _offset(k: int) -> float:
    return (k - 0.5) * WIDTH


def _scores(ax: Any, table: Table, t: str) -> None:
    x = list(range(len(table.methods)))
    for k, (p, _) in enumerate(PROTOCOLS):
        cells = [table.cells[m, t, p] for m in table.methods]
        means = [c.mean if c.mean is not None else math.nan for c in cells]
        stds = [c.std if c.std is not None else math.nan for c in cells]  # no bar for one seed
        xs = [i + _offset(k) for i in x]
        ax.bar(xs, means, width=WIDTH, yerr=stds, capsize=2, label=p, alpha=0.85)
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
    ax.set_title(f"{header(t)} ({metric})", fontsize=9)


def _differences(ax: Any, table: Table, t: str) -> None:
    """Paired difference per row and protocol: a point with its interval as error bar,
    filled when the interval excludes 0; a row with one paired seed gets the point only."""
    ax.axhline(0.0, color="k", lw=0.8)
    for k, (p, _) in enumerate(PROTOCOLS):
        label = p  # on the protocol's first point only
        for i, m in enumerate(table.methods):
            d = table.paired[m, t, p]
            if m == table.baseline or d.mean is None:
                continue
            err: Optional[List[List[float]]] = None
            if d.low is not None and d.high is not None:
                err = [[d.mean - d.low], [d.high - d.mean]]
            ax.errorbar([i + _offset(k)], [d.mean], yerr=err, fmt="o", capsize=3, color=f"C{k}",
                        mfc=f"C{k}" if d.significant else "white", label=label)
            label = None
    ax.set_title(f"{header(t)}: minus {table.label(table.baseline or '')}", fontsize=9)


def plot(table: Table, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = 2 if table.baseline is not None else 1
    tasks = table.tasks
    fig, axes = plt.subplots(lines, len(tasks), figsize=(1.0 + 0.55 * len(table.methods) * len(tasks), 3.6 * lines),
                             squeeze=False)
    x = list(range(len(table.methods)))
    for j, t in enumerate(tasks):
        _scores(axes[0][j], table, t)
        if lines == 2:
            _differences(axes[1][j], table, t)
        for ax in axes[:, j]:
            ax.set_xticks(x, [table.label(m) for m in table.methods], rotation=45, ha="right", fontsize=7)
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("dev metric x100")
    axes[0][0].legend(fontsize=7)
    if lines == 2:
        axes[1][0].set_ylabel(f"paired difference, {LEVEL:.0%} t interval")
        axes[1][0].legend(fontsize=7, title="filled: excludes 0", title_fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
