"""The fine-tuned-teacher cache: an entry is renamed into place whole; losing the race to a
concurrent run keeps that run's complete entry, any other failure is raised."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from kdlab import teacher_cache
from kdlab.models import Loaded


class Saves:
    """Stands for a model or tokenizer: ``save_pretrained`` writes one file."""

    def __init__(self, name: str) -> None:
        self.name = name

    def save_pretrained(self, directory) -> None:
        (Path(directory) / self.name).write_text("weights")


def loaded() -> Loaded:
    return Loaded(Saves("model.bin"), Saves("vocab.txt"), "src", has_task_head=False)


def leftovers(cache_dir: Path) -> list:
    return sorted(p.name for p in (cache_dir / "teachers").iterdir() if p.name.startswith("."))


def test_save_writes_a_complete_entry_and_clears_the_partial_checkpoints(tmp_path):
    teacher_cache.partial(str(tmp_path), "k").mkdir(parents=True)
    out = teacher_cache.save(str(tmp_path), "k", loaded(), {"task": "t"})
    entry = tmp_path / "teachers" / "k"
    assert out.source == str(entry) and out.has_task_head
    assert sorted(p.name for p in entry.iterdir()) == [teacher_cache.MARKER, "model.bin", "vocab.txt"]
    assert json.loads((entry / teacher_cache.MARKER).read_text())["key"] == "k"
    assert leftovers(tmp_path) == []


def test_losing_the_race_to_a_complete_entry_keeps_it(tmp_path):
    entry = tmp_path / "teachers" / "k"
    entry.mkdir(parents=True)
    (entry / teacher_cache.MARKER).write_text(json.dumps({"key": "k", "by": "the other run"}))
    out = teacher_cache.save(str(tmp_path), "k", loaded(), {"task": "t"})
    assert out.source == str(entry)
    assert json.loads((entry / teacher_cache.MARKER).read_text())["by"] == "the other run"
    assert leftovers(tmp_path) == []  # our copy is gone


def test_a_stray_directory_without_the_marker_is_an_error(tmp_path):
    entry = tmp_path / "teachers" / "k"
    entry.mkdir(parents=True)
    (entry / "junk").write_text("")
    with pytest.raises(OSError) as err:
        teacher_cache.save(str(tmp_path), "k", loaded(), {"task": "t"})
    assert err.value.errno in (errno.ENOTEMPTY, errno.EEXIST)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("code", [errno.EACCES, errno.ENOSPC, errno.EXDEV])
def test_any_other_rename_error_propagates_and_cleans_up(tmp_path, monkeypatch, code):
    def refuse(src, dst):
        raise OSError(code, os.strerror(code))

    teacher_cache.partial(str(tmp_path), "k").mkdir(parents=True)
    monkeypatch.setattr(teacher_cache.os, "rename", refuse)
    with pytest.raises(OSError) as err:
        teacher_cache.save(str(tmp_path), "k", loaded(), {"task": "t"})
    assert err.value.errno == code
    assert not (tmp_path / "teachers" / "k").exists()
    # the temp copy is removed; the fine-tuning checkpoints stay for the next run to resume
    assert leftovers(tmp_path) == [".partial-k"]
