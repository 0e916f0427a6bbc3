"""Fine-tuned teachers, cached on disk under a key of (model, task, recipe).

Later runs and every member of a sweep that use the same teacher, task and fine-tuning
recipe load the cached copy instead of training again. Entries are written to a temp
directory and renamed into place, so a crash never leaves a half-written teacher.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import OmegaConf

from kdlab.families.base import Family
from kdlab.models import Loaded

log = logging.getLogger(__name__)

MARKER = "kdlab_teacher.json"
NOT_IN_KEY = ("save_every",)  # recipe fields that do not change the fine-tuned weights


def partial(cache_dir: str, k: str) -> Path:
    """Checkpoints of a fine-tuning in progress (removed once the teacher is saved)."""
    return Path(cache_dir) / "teachers" / f".partial-{k}"


def key(source: str, task: str, finetune: Any, max_length: int) -> str:
    """The cache key of a fine-tuned teacher: (weights source, task, recipe)."""
    recipe = OmegaConf.to_container(finetune, resolve=True) if OmegaConf.is_config(finetune) else dict(finetune)
    recipe = {k: v for k, v in recipe.items() if k not in NOT_IN_KEY}
    blob = json.dumps({"model": source, "task": task, "recipe": recipe, "max_length": max_length},
                      sort_keys=True)
    slug = task.replace("/", "-")
    return f"{slug}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def entry(cache_dir: str, k: str) -> Path:
    return Path(cache_dir) / "teachers" / k


def load(cache_dir: str, k: str, num_labels: int, family: Family) -> Optional[Loaded]:
    path = entry(cache_dir, k)
    if not (path / MARKER).exists():
        return None
    return family.load(str(path), num_labels, key="cached teacher")


def save(cache_dir: str, k: str, loaded: Loaded, meta: Dict[str, Any]) -> Loaded:
    path = entry(cache_dir, k)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{k}-", dir=path.parent))
    try:
        loaded.model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({"key": k, "source": loaded.source, **meta}, indent=2))
        try:
            os.rename(tmp, path)
        except OSError as e:
            # A concurrent sweep member renamed its complete copy into place first: keep
            # theirs. Anything else (permissions, a full disk, a stray directory without the
            # marker) is an error; the temp directory is removed either way.
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not (path / MARKER).is_file():
                raise
            log.info("teacher %s was cached by another run meanwhile; using that copy", k)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(partial(cache_dir, k), ignore_errors=True)
    return Loaded(loaded.model, loaded.tokenizer, str(path), has_task_head=True)
