"""Checkpoints: full training state, written atomically, verified on load.

A checkpoint is a directory ``step-<N>/`` holding ``state.pt`` (model, optimizer,
scheduler, grad scaler, RNG states, sampler position, step, evaluations) and
``meta.json`` (step, the sha256 of ``state.pt``, the flattened config, the W&B run id).
It is written into a temp directory and renamed into place, so a crash or a full disk
leaves either the whole checkpoint or none; a checkpoint whose hash does not match is
reported and skipped in favour of the previous good one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from kdlab.errors import ConfigError, ResourceError
from kdlab.metadata import config_changes

log = logging.getLogger(__name__)

STATE = "state.pt"
META = "meta.json"
PREFIX = "step-"


def rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(directory: Path, step: int, state: Dict[str, Any], meta: Dict[str, Any], keep_last: int) -> Path:
    """Write checkpoint ``step`` under ``directory`` and drop all but the last ``keep_last``."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{PREFIX}{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
    try:
        torch.save(state, tmp / STATE)
        full_meta = {**meta, "step": step, "sha256": _sha256(tmp / STATE)}
        (tmp / META).write_text(json.dumps(full_meta, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ResourceError(
            f"could not write checkpoint {target} ({e.strerror or e}); the previous checkpoints are "
            "intact. Free disk space or set trainer.save_every=0"
        ) from e
    for old in list_checkpoints(directory)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(directory: Path) -> List[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def read_meta(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads((path / META).read_text())
    except (OSError, ValueError):
        return None


def load_latest(directory: Path, config: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """The state of the newest checkpoint that verifies; corrupt ones are reported and skipped."""
    for path in reversed(list_checkpoints(directory)):
        meta = read_meta(path)
        if meta is None or not (path / STATE).exists() or _sha256(path / STATE) != meta.get("sha256"):
            log.warning("checkpoint %s is corrupt or partial; trying the previous one", path)
            continue
        changed = [] if config is None else config_changes(meta.get("config") or {}, config)
        if changed:
            raise ConfigError(
                f"cannot resume from {path}: it was written by a different configuration "
                f"(changed: {', '.join(changed)}). Resume with the same config, or start a new "
                "run without trainer.resume"
            )
        state = torch.load(path / STATE, map_location="cpu", weights_only=False)
        state["meta"] = meta
        return state
    return None


def resume_dir(cfg: Any) -> Optional[Path]:
    """The run directory whose checkpoints ``trainer.resume`` continues (None: a fresh run)."""
    if not cfg.trainer.resume:
        return None
    path = Path(cfg.output_dir) if cfg.trainer.resume == "auto" else Path(cfg.trainer.resume)
    if cfg.trainer.resume != "auto" and not (path / "checkpoints").is_dir():
        raise ConfigError(f"trainer.resume={cfg.trainer.resume!r}: no checkpoints/ directory there "
                          "(give the run directory of a run with trainer.save_every > 0, or 'auto')")
    return path


def wandb_id(path: Optional[Path]) -> Optional[str]:
    """The W&B run id recorded by the newest checkpoint under ``path``, to continue that run."""
    if path is None:
        return None
    for phase_dir in sorted((path / "checkpoints").glob("*")):
        for ckpt in reversed(list_checkpoints(phase_dir)):
            meta = read_meta(ckpt)
            if meta and meta.get("wandb_id"):
                return meta["wandb_id"]
    return None
