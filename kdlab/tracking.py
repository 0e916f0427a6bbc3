"""One tracker interface for all logging: W&B (online / offline / disabled) plus, always,
``metrics.jsonl`` in the run directory.

Without an API key, ``mode=auto`` runs W&B offline so nothing needs the network; an
offline run can be uploaded later with ``wandb sync <run_dir>/wandb/offline-run-*``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch

from kdlab.config import LoggerConfig
from kdlab.errors import ConfigError

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
WANDB_MODES = ("online", "offline", "disabled", "auto")
BACKENDS = ("wandb", "none")


def resolve_wandb_mode(mode: str) -> str:
    if mode not in WANDB_MODES:
        raise ConfigError(f"logger.mode={mode!r}: valid modes are {', '.join(WANDB_MODES)}")
    if mode != "auto":
        return mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN / inf
    return v


class Tracker:
    """Logs metric dicts with a global, monotonic step. Always call ``finish``."""

    def __init__(
        self,
        cfg: LoggerConfig,
        run_dir: str | os.PathLike,
        config: Mapping[str, Any],
        name: Optional[str] = None,
        group: Optional[str] = None,
        run_id: Optional[str] = None,
    ) -> None:
        if cfg.backend not in BACKENDS:
            raise ConfigError(f"logger.backend={cfg.backend!r}: valid backends are {', '.join(BACKENDS)}")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")
        self.step = 0
        self._wandb = None
        mode = resolve_wandb_mode(cfg.mode)
        if cfg.backend == "wandb" and mode != "disabled":
            import wandb

            self._wandb = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                group=group or cfg.group,
                job_type=_sweep_job_type(),
                id=run_id,
                resume="allow" if run_id else None,
                tags=list(cfg.tags),
                name=name,
                mode=mode,
                dir=str(self.run_dir),
                config=dict(config),
                reinit="finish_previous",
            )

    @property
    def run_id(self) -> Optional[str]:
        return None if self._wandb is None else self._wandb.id

    def log(self, metrics: Mapping[str, Any], step: Optional[int] = None) -> None:
        """Log ``metrics``; ``step`` defaults to one past the last logged step."""
        self.step = self.step + 1 if step is None else max(step, self.step)
        row: Dict[str, Any] = {"step": self.step, **{k: _jsonable(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log(dict(metrics), step=self.step)

    def summary(self, values: Mapping[str, Any]) -> None:
        if self._wandb is not None:
            for k, v in values.items():
                self._wandb.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        if not self._file.closed:
            self._file.close()
        if self._wandb is not None:
            self._wandb.finish(exit_code=exit_code)
            self._wandb = None


class DeviceMeans:
    """Means of a fixed list of scalar tensors over a logging window, summed on their
    device and read with one host transfer when logged, so that steps between logs never
    wait for the device (``tensor.item()`` per step would)."""

    def __init__(self) -> None:
        self.names: List[str] = []
        self.sums: Optional[torch.Tensor] = None  # [K]
        self.count: Optional[torch.Tensor] = None  # scalar: the values added (kept ones)

    def add(self, names: List[str], values: torch.Tensor, keep: torch.Tensor) -> None:
        """Add ``values [K]`` (named ``names``) where ``keep`` (a bool scalar) is true."""
        if self.sums is None:
            self.names, self.sums, self.count = list(names), torch.zeros_like(values), values.new_zeros(())
        self.sums = self.sums + torch.where(keep, values, 0.0)
        self.count = self.count + keep

    def means(self) -> Dict[str, float]:
        """The window's means (NaN for a window with nothing kept), then a fresh window."""
        if self.sums is None:
            return {}
        *sums, count = torch.cat([self.sums, self.count[None]]).tolist()
        self.sums, self.count = torch.zeros_like(self.sums), torch.zeros_like(self.count)
        return {k: (s / count if count else math.nan) for k, s in zip(self.names, sums, strict=True)}


class NullTracker(Tracker):
    """The tracker of non-zero ranks: logs nothing."""

    def __init__(self) -> None:
        self.step = 0
        self._wandb = None

    def log(self, metrics: Mapping[str, Any], step: Optional[int] = None) -> None:
        pass

    def summary(self, values: Mapping[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def _sweep_job_type() -> Optional[str]:
    """Under Hydra multirun, runs of one sweep share a job type (the sweep directory)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        return f"sweep:{hc.sweep.dir}" if hc.mode and hc.mode.name == "MULTIRUN" else None
    except (ImportError, ValueError):
        return None


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` via a temp file and rename: never a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=_jsonable)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
