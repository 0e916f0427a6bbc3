"""Reliability diagrams of a sweep, one file: a panel per row (its students' bins pooled over
seeds and tasks) and one for the teachers (one per row when the rows' teachers differ, e.g.
an online run's teacher as it started against an offline run's fine-tuned one), and one
per online row for its co-trained teacher (``online_teacher``); accuracy per confidence bin against the diagonal,
with the pooled ECE in the title. Rows whose runs recorded no bins (regression, ReCoRD, runs
older than the calibration report) are left out; no panel at all: no file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from kdlab.tables.runs import Run
from kdlab.tracking import RESULTS_FILE


def pooled(bins: Sequence[Dict[str, List[float]]]) -> Optional[Dict[str, np.ndarray]]:
    """Bins of several runs summed: counts added, accuracy and confidence count-weighted."""
    bins = [b for b in bins if b]
    if not bins:
        return None
    count = np.sum([b["count"] for b in bins], axis=0).astype(float)
    safe = np.maximum(count, 1.0)
    acc = np.sum([np.asarray(b["accuracy"]) * b["count"] for b in bins], axis=0) / safe
    conf = np.sum([np.asarray(b["confidence"]) * b["count"] for b in bins], axis=0) / safe
    return {"count": count, "accuracy": acc, "confidence": conf,
            "ece": float(np.sum(count / max(count.sum(), 1.0) * np.abs(acc - conf)))}


def plot_reliability(runs: Sequence[Run], path: Path, title: str) -> bool:
    """Write the figure; returns False (and writes nothing) when no run has bins."""
    panels: Dict[str, List[Dict[str, List[float]]]] = {}
    teachers: Dict[str, List[Dict[str, List[float]]]] = {}
    online: Dict[str, List[Dict[str, List[float]]]] = {}
    for r in runs:
        if not r.ok:
            continue
        res = json.loads((r.path / RESULTS_FILE).read_text())
        panels.setdefault(r.label or r.row, []).append(res["student"].get("reliability"))
        teachers.setdefault(r.label or r.row, []).append(res["teacher"].get("reliability"))
        if "online_teacher" in res:  # the teacher trained with the student (kdlab.online)
            online.setdefault(r.label or r.row, []).append(res["online_teacher"].get("reliability"))
    data = {k: p for k, v in panels.items() if (p := pooled(v)) is not None}
    # one teacher panel when every row had the same teacher (the same bins), else one per row
    per_row = {k: p for k, v in teachers.items() if (p := pooled(v)) is not None}
    if len({json.dumps({k: v.tolist() for k, v in p.items() if k != "ece"}) for p in per_row.values()}) == 1:
        data["teacher"] = next(iter(per_row.values()))
    else:
        data.update({f"teacher ({k})": p for k, p in per_row.items()})
    data.update({f"online teacher ({k})": p for k, v in online.items() if (p := pooled(v)) is not None})
    if not data:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(data), figsize=(2.6 * len(data), 2.8), squeeze=False)
    for ax, (name, d) in zip(axes[0], data.items(), strict=True):
        m = len(d["count"])
        centres = (np.arange(m) + 0.5) / m
        has = d["count"] > 0
        ax.bar(centres[has], d["accuracy"][has], width=1.0 / m, edgecolor="k", alpha=0.8, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{name}\nECE {100 * d['ece']:.1f}", fontsize=8)
        ax.set_xlabel("confidence", fontsize=7)
    axes[0][0].set_ylabel("accuracy", fontsize=7)
    fig.suptitle(f"{title}: reliability", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
