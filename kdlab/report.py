"""The short table a run prints: one row per model, the task's metrics as columns."""

from __future__ import annotations

import os
from typing import Any, Dict


def format_table(results: Dict[str, Any]) -> str:
    metric = results["metric"]
    cols = [metric] + [k for k in results["teacher"]["dev"] if k != metric]
    rows = [("majority class", None, results.get("majority", {}).get("dev", {})),
            (f"teacher ({results['teacher']['name']})", results["teacher"]["params"], results["teacher"]["dev"])]
    if "baseline_student" in results:
        b = results["baseline_student"]
        rows.append(("student, no distillation", b["params"], b["dev"]))
    s = results["student"]
    rows.append((f"student, distilled ({results['divergence']})", s["params"], s["dev"]))
    if s.get("evaluations", 1) > 1:
        rows.append(("  (max over evaluations)", None, s["dev_best"]))
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{results['task']}  (dev; main metric: {metric})",
             f"{'model':<{width}}{'params':>10}" + "".join(f"{c:>24}" for c in cols)]
    for name, params, dev in rows:
        if not dev:
            continue
        p = f"{params / 1e6:.1f}M" if params else "-"
        lines.append(f"{name:<{width}}{p:>10}" + "".join(
            f"{dev[c]:>24.4f}" if c in dev else f"{'-':>24}" for c in cols))
    return os.linesep.join(lines)
