"""The short table a run prints: one row per model, the task's metrics as columns, then
each model's size and speed, and what each student saves over the teacher."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n}B"


def footprint_lines(results: Dict[str, Any], names: Dict[str, str], width: int) -> List[str]:
    """Size and speed of each model with a ``footprint``, and the teacher/student ratios."""
    rows = [(names[who], results[who]["footprint"]) for who in names if "footprint" in results.get(who, {})]
    if not rows:
        return []
    first = rows[0][1]
    lines = ["", f"size and speed (one batch of {first['batch_size']} dev examples on {first['device']}, "
                 f"{first['precision']}, median of {first['repeats']})",
             f"{'model':<{width}}{'params':>10}{'weights':>12}{'latency':>14}{'examples/s':>14}"]
    for name, fp in rows:
        lines.append(f"{name:<{width}}{fp['params'] / 1e6:>9.1f}M{_bytes(fp['weights_bytes']):>12}"
                     f"{fp['latency_ms']:>12.1f}ms{fp['throughput']:>14.1f}")
    for who, r in results.get("savings", {}).items():
        lines.append(f"{names[who].split(' (')[0]} vs teacher: {r['params']:.1f}x fewer parameters, "
                     f"{r['size']:.1f}x smaller weights, {r['latency']:.1f}x faster")
    return lines


def format_table(results: Dict[str, Any]) -> str:
    metric = results["metric"]
    cols = [metric] + [k for k in results["teacher"]["dev"] if k != metric]
    names = {"teacher": f"teacher ({results['teacher']['name']})"}
    rows: List[tuple[str, Optional[int], Dict[str, float]]] = [
        ("majority class", None, results.get("majority", {}).get("dev", {})),
        (names["teacher"], results["teacher"]["params"], results["teacher"]["dev"])]
    if "baseline_student" in results:
        b = results["baseline_student"]
        names["baseline_student"] = "student, no distillation"
        rows.append((names["baseline_student"], b["params"], b["dev"]))
    if "online_teacher" in results:  # trained together with the student
        o = results["online_teacher"]
        names["online_teacher"] = f"teacher, trained online ({o['method']})"
        rows.append((names["online_teacher"], o["params"], o["dev"]))
    s = results["student"]
    names["student"] = (f"student, online ({results['online_teacher']['method']})" if "online_teacher" in results
                        else f"student, distilled ({' + '.join(results['terms'])})")
    rows.append((names["student"], s["params"], s["dev"]))
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
    lines += footprint_lines(results, names, width)
    return os.linesep.join(lines)
