"""Run metadata: git commit, package versions, data and teacher hashes."""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, get_type_hints

from kdlab.cache_keys import examples_digest
from kdlab.errors import ConfigError
from kdlab.tracking import RESULTS_FILE

PACKAGES = ("torch", "transformers", "hydra-core", "omegaconf", "datasets", "geomloss", "pykeops", "wandb")
# Keys that may change between a run and its resumption.
RESUME_FREE = ("trainer.resume", "trainer.progress", "output_dir", "logger", "hardware.num_threads",
               "hardware.compile")  # compile: the same computation, up to float rounding
# Keys that may differ between a finished run and the same job asked for again
# (trainer.skip_if_done): where the caches and data live, not what is computed.
DONE_FREE = (*RESUME_FREE, "cache_dir", "dataset.data_dir", "trainer.skip_if_done")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> Dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def data_hash(examples: List[Any]) -> str:
    return examples_digest(examples)[:16]


def run_metadata(train_examples: List[Any], teacher_hash: str) -> Dict[str, Any]:
    return {"git_commit": git_commit(), "versions": versions(), "train_data_sha256": data_hash(train_examples),
            "teacher_weights_sha256": teacher_hash[:16]}


def flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


@functools.cache
def _schema_defaults() -> Dict[str, Any]:
    from omegaconf import OmegaConf

    from kdlab.config import Config

    out = flatten(OmegaConf.to_container(OmegaConf.structured(Config), resolve=False, enum_to_str=True))
    # the group nodes (trainer, teacher, ...) are MISSING in Config, filled by a YAML
    # option: their keys' defaults are those of the node's own dataclass
    for name, kind in get_type_hints(Config).items():
        if dataclasses.is_dataclass(kind):
            node = OmegaConf.to_container(OmegaConf.structured(kind), resolve=False, enum_to_str=True)
            out.update(flatten(node, name + "."))
    return out


def config_changes(saved: Dict[str, Any], now: Dict[str, Any]) -> List[str]:
    """The flattened keys whose values differ between a ``saved`` config and the one of
    ``now``. A key absent from ``saved`` that holds its schema default ``now`` is no change:
    it was added to kdlab since, and its default computes what the saved run computed
    (``teachers``, ``objective.teachers.combine``), so a sweep or a checkpoint written
    before it stays resumable."""
    defaults = _schema_defaults()
    return sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k)
                  and not (k not in saved and k in defaults and defaults[k] == now[k]))


def config_for_resume(resolved: Dict[str, Any]) -> Dict[str, Any]:
    """The flattened config a checkpoint must match to be resumed, without free keys."""
    return _free(flatten(resolved), RESUME_FREE)


def is_free(key: str, free: tuple) -> bool:
    """``key`` is one of the ``free`` keys or lies under one (``logger`` covers ``logger.mode``)."""
    return any(key == f or key.startswith(f + ".") for f in free)


def _free(flat: Dict[str, Any], free: tuple) -> Dict[str, Any]:
    return {k: v for k, v in flat.items() if not is_free(k, free)}


def finished_results(out_dir: Path, resolved: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The results.json already in ``out_dir`` if it is this config's (up to DONE_FREE);
    None when there is none. Results of another config raise: a sweep whose job numbers
    now name other jobs must not pass them off as this one's, nor overwrite them."""
    path = out_dir / RESULTS_FILE
    if not path.is_file():
        return None
    done: Dict[str, Any] = json.loads(path.read_text())
    mine, theirs = _free(flatten(resolved), DONE_FREE), _free(flatten(done.get("config") or {}), DONE_FREE)
    differ = config_changes(theirs, mine)
    if differ:
        shown = ", ".join(f"{k}={theirs.get(k)!r} there, {mine.get(k)!r} now" for k in differ[:3])
        raise ConfigError(f"trainer.skip_if_done: {path} holds the results of another config ({shown}"
                          f"{', ...' if len(differ) > 3 else ''}); give this sweep a fresh hydra.sweep.dir "
                          "or move that directory away")
    return done
