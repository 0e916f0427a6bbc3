"""One job directory of a sweep, read: its task, seed, overrides and, if it finished, its scores.

A directory with ``results.json`` is a finished run; one with ``.hydra/`` but no
``results.json`` a failed or unfinished run, read from ``.hydra/config.yaml`` so it can be
counted and listed rather than dropped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from omegaconf import OmegaConf

from kdlab.tracking import RESULTS_FILE

PROTOCOLS: Tuple[Tuple[str, str], ...] = (("best", "dev_best"), ("last", "dev_last"))
SCALE = 100.0  # metrics are reported as percentages, as in the papers


class TableError(Exception):
    """A sweep that cannot be tabulated: no runs, a run without a needed key, an unknown row."""


@dataclass
class Run:
    """One job directory: task, seed, the config and overrides it ran with, scores if it finished.

    ``row``, ``label`` and ``rows_by`` are set once every job of the sweep is known
    (kdlab.tables.rows), since what tells rows apart is what differs between jobs."""

    path: Path
    task: str
    seed: int
    config: Dict[str, Any]
    overrides: Optional[Dict[str, str]]  # None: no .hydra/overrides.yaml
    metric: Optional[str] = None
    scores: Dict[str, float] = field(default_factory=dict)  # protocol -> main metric
    teacher: Optional[float] = None
    row: str = ""
    label: str = ""  # the row's display name
    rows_by: str = ""  # what the sweep's rows are, for the caption

    @property
    def ok(self) -> bool:
        return bool(self.scores)


def select(cfg: Mapping[str, Any], key: str, where: Path) -> Any:
    """The value at a dotted key; a missing key names the file and the option to change."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise TableError(f"{where}: the config has no key {key!r} (set --method-key to a key it has)")
        node = node[part]
    return node


def read_overrides(job_dir: Path) -> Optional[Dict[str, str]]:
    """``key -> value`` as typed on the command line (``+``/``~`` prefixes dropped)."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    items = OmegaConf.to_container(OmegaConf.load(path)) or []
    out: Dict[str, str] = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def read_run(job_dir: Path, metric: Optional[str] = None) -> Run:
    """A finished run from ``results.json``, or a failed one from ``.hydra/config.yaml``.
    ``metric``: the dev metric to read (e.g. ``ece``); default: the task's main metric."""
    overrides = read_overrides(job_dir)
    results = job_dir / RESULTS_FILE
    if results.is_file():
        res = json.loads(results.read_text())
        metric = metric or res["metric"]
        student = res["student"]
        for who in ("student", "teacher"):
            if metric not in res[who]["dev"]:
                raise TableError(f"{results}: the {who} has no dev metric {metric!r} (it has "
                                 f"{', '.join(res[who]['dev'])})")
        scores = {protocol: float(student.get(key, student["dev"])[metric]) * SCALE for protocol, key in PROTOCOLS}
        return Run(job_dir, res["task"], int(res["seed"]), res["config"], overrides, metric, scores,
                   float(res["teacher"]["dev"][metric]) * SCALE)
    cfg_file = job_dir / ".hydra" / "config.yaml"
    cfg = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=False)
    assert isinstance(cfg, dict)
    return Run(job_dir, str(select(cfg, "dataset.name", cfg_file)), int(select(cfg, "seed", cfg_file)), cfg, overrides)


def _natural(path: Path, root: Path) -> List[Tuple[int, Any]]:
    """Sort key: job directories in job-number order (2 before 10), which follows the sweep's
    listing order (``divergence=kl,sinkhorn``: kl first)."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in path.relative_to(root).parts]


def job_dirs(root: Path) -> List[Path]:
    """Every job directory under ``root``: one holding ``results.json`` or ``.hydra/``."""
    dirs = {p.parent for p in root.rglob(RESULTS_FILE)} | {p.parent for p in root.rglob(".hydra") if p.is_dir()}
    return sorted(dirs, key=lambda p: _natural(p, root))


def planned_jobs(root: Path) -> Optional[int]:
    """Jobs a basic-sweeper multirun launched from ``root/multirun.yaml`` (None: unknown).

    Jobs that never started leave no directory; comparing this count with the directories
    found shows them even when a whole row or task is absent from the table."""
    path = root / "multirun.yaml"
    if not path.is_file():
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = OmegaConf.load(path).hydra
    if not str(OmegaConf.select(hydra_cfg, "sweeper._target_", default="")).endswith("BasicSweeper"):
        return None
    overrides = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    return math.prod(len(list(o.sweep_string_iterator())) for o in overrides if o.is_sweep_override())
