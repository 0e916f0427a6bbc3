"""Teacher builders. Fine-tuning a teacher without a task head happens in the runner."""

from __future__ import annotations

from kdlab.config import TeacherConfig
from kdlab.errors import ConfigError
from kdlab.models import TEACHERS, Loaded
from kdlab.models.hf import load_classifier
from kdlab.models.minilm import minilm_path


@TEACHERS.register("minilm")
def minilm(cfg: TeacherConfig, num_labels: int, cache_dir: str) -> Loaded:
    """The embedded MiniLM-L6 encoder (no task head: it is fine-tuned on the task first)."""
    return load_classifier(str(minilm_path(cache_dir)), num_labels, key="teacher=minilm")


@TEACHERS.register("pretrained")
def pretrained(cfg: TeacherConfig, num_labels: int, cache_dir: str) -> Loaded:
    """A checkpoint from ``teacher.path``: a local directory or a hub id."""
    if not cfg.path:
        raise ConfigError("teacher=pretrained needs teacher.path=<local dir or hub id>")
    return load_classifier(cfg.path, num_labels, key="teacher.path", reinit_head=cfg.force_finetune)
