"""The README's commands set up what they need, once; the suite fails without its data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SKIP_DATA_ENV


def make_dry_run(target: str, venv: Path) -> str:
    """The commands ``make <target>`` would run with ``VENV=venv`` (``make -n``: none is run)."""
    assert shutil.which("make"), "make is needed: the README's commands are make targets"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS")}
    out = subprocess.run(["make", "-n", "-C", str(REPO), target, f"VENV={venv}"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("target, command", [("run", "kdlab experiment=glue_minilm"), ("test", "pytest -q")])
def test_run_and_test_install_on_a_fresh_clone_and_only_once(target, command, tmp_path):
    venv = tmp_path / "venv"
    fresh = make_dry_run(target, venv)
    assert f"-m venv {venv}" in fresh and 'pip install -e ".[test,sweep]"' in fresh
    assert fresh.index("pip install -e") < fresh.index(command)
    venv.mkdir()
    (venv / ".installed").touch()  # what a completed install leaves, newer than pyproject.toml
    again = make_dry_run(target, venv)
    assert "pip install" not in again and command in again
    os.utime(venv / ".installed", (0, 0))  # pyproject.toml changed since: install again
    assert "pip install -e" in make_dry_run(target, venv)


def collect(*args: str, data: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != SKIP_DATA_ENV}
    environ.update(KDLAB_DATA_DIR=str(data), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                           "tests/test_smoke.py", *args], capture_output=True, text=True, cwd=REPO, env=environ)


def test_missing_data_fails_the_suite_unless_skipped_on_purpose(tmp_path):
    out = collect(data=tmp_path)
    assert out.returncode != 0
    assert f"not at {tmp_path}: point KDLAB_DATA_DIR at" in out.stdout + out.stderr
    assert collect("--skip-data", data=tmp_path).returncode == 0
    assert collect(data=tmp_path, **{SKIP_DATA_ENV: "1"}).returncode == 0
