"""Fine-tuned teachers, cached on disk under ``kdlab.cache_keys.teacher`` (the model before
fine-tuning, its tokenizer, the task, the examples, the recipe, ...).

Later runs and every member of a sweep that fine-tune the same model on the same data the
same way load the cached copy instead of training again. Entries are written to a temp
directory and renamed into place, so a crash never leaves a half-written teacher.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

from kdlab.families.base import Family
from kdlab.models import Loaded

log = logging.getLogger(__name__)

MARKER = "kdlab_teacher.json"


def partial(cache_dir: str, k: str) -> Path:
    """Checkpoints of a fine-tuning in progress (removed once the teacher is saved)."""
    return Path(cache_dir) / "teachers" / f".partial-{k}"


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
