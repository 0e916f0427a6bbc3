"""Run metadata: git commit, package versions, data and teacher hashes."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path
from typing import Any, Dict, List

from kdlab.cache_keys import examples_digest

PACKAGES = ("torch", "transformers", "hydra-core", "omegaconf", "datasets", "geomloss", "pykeops", "wandb")
# Keys that may change between a run and its resumption.
RESUME_FREE = ("trainer.resume", "trainer.progress", "output_dir", "logger", "hardware.num_threads",
               "hardware.compile")  # compile: the same computation, up to float rounding


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


def config_for_resume(resolved: Dict[str, Any]) -> Dict[str, Any]:
    """The flattened config a checkpoint must match to be resumed, without free keys."""
    flat = flatten(resolved)
    return {k: v for k, v in flat.items() if not any(k == f or k.startswith(f + ".") for f in RESUME_FREE)}
