"""Teacher builders. Fine-tuning a teacher without a task head happens in the runner."""

from __future__ import annotations

from pathlib import Path

from kdlab.config import TeacherConfig
from kdlab.errors import ConfigError
from kdlab.families.base import Family
from kdlab.models import TEACHERS, Loaded
from kdlab.models.minilm import minilm_path


@TEACHERS.register("minilm")
def minilm(cfg: TeacherConfig, num_labels: int, cache_dir: str, family: Family) -> Loaded:
    """The embedded MiniLM-L6 encoder (no task head: it is fine-tuned on the task first)."""
    if family.name != "encoder":
        raise ConfigError(f"teacher=minilm is an encoder; teacher.family={family.name!r} needs another teacher")
    return family.load(str(minilm_path(cache_dir)), num_labels, key="teacher=minilm")


@TEACHERS.register("pretrained")
def pretrained(cfg: TeacherConfig, num_labels: int, cache_dir: str, family: Family) -> Loaded:
    """A checkpoint from ``teacher.path``: a local directory or a hub id; a kdlab run
    directory means its ``student/`` (multi-step, teacher-assistant distillation)."""
    if not cfg.path:
        raise ConfigError("teacher=pretrained needs teacher.path=<local dir or hub id>")
    path, run = cfg.path, Path(cfg.path).expanduser()
    if not (run / "config.json").is_file() and (run / "student" / "config.json").is_file():
        path = str(run / "student")  # a run directory: its distilled student teaches the next one
    return family.load(path, num_labels, key="teacher.path", reinit_head=cfg.force_finetune)
