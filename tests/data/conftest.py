"""Fixtures of the data tests: the real files (when present) and small files written here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest


@pytest.fixture(scope="session")
def real_dir(data_dir) -> Path:
    """The real GLUE/SuperGLUE files (tests/conftest.py: missing ones fail the suite unless
    skipped on purpose)."""
    return data_dir


def _need(root: Path, rel: str) -> Path:
    path = root / rel
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def _write_tsv(path: Path, rows: List[List[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _write_jsonl(path: Path, objs: List[Dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


@pytest.fixture
def need():
    """``need(root, "glue/RTE/dev.tsv")``: the file's path, or skip the test."""
    return _need


@pytest.fixture
def write_tsv():
    return _write_tsv


@pytest.fixture
def write_jsonl():
    return _write_jsonl
