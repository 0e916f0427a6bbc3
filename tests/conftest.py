"""Shared fixtures: configs composed with Hydra's API, the real data dir, a cache dir."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from hydra import compose, initialize_config_dir

from kdlab.cli import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("KDLAB_DATA_DIR") or REPO.parent / "shared" / "data")
SKIP_DATA_ENV = "KDLAB_SKIP_DATA_TESTS"


def pytest_addoption(parser) -> None:
    parser.addoption("--skip-data", action="store_true",
                     help=f"skip the tests that read the real GLUE / SuperGLUE files (or {SKIP_DATA_ENV}=1)")


def _skip_data(config) -> bool:
    return config.getoption("--skip-data") or os.environ.get(SKIP_DATA_ENV, "") not in ("", "0")


def missing_data_message() -> str | None:
    """Why the real data cannot be read, or None when it can."""
    if (DATA_DIR / "glue").is_dir():
        return None
    return (f"the real GLUE / SuperGLUE files are not at {DATA_DIR}: point KDLAB_DATA_DIR at the "
            f"directory holding glue/ and superglue/ (export KDLAB_DATA_DIR=/path/to/data), or skip "
            f"the tests that read them on purpose with --skip-data or {SKIP_DATA_ENV}=1")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items) -> None:
    """A missing data directory fails the run once, up front: a silent skip would leave a
    green suite without a single end-to-end run."""
    if _skip_data(config) or not any("data_dir" in getattr(i, "fixturenames", ()) for i in items):
        return
    problem = missing_data_message()
    if problem:
        raise pytest.UsageError(problem)


@pytest.fixture(scope="session")
def data_dir(request) -> Path:
    if _skip_data(request.config):
        pytest.skip(f"tests that read the real data skipped on request (--skip-data / {SKIP_DATA_ENV})")
    problem = missing_data_message()
    if problem:
        pytest.fail(problem, pytrace=False)
    return DATA_DIR


@pytest.fixture
def tracker(tmp_path):
    """A tracker that logs nowhere, for loops run directly in a test."""
    from kdlab.config import LoggerConfig
    from kdlab.tracking import Tracker

    t = Tracker(LoggerConfig(backend="none", mode="disabled"), tmp_path / "run", {})
    yield t
    t.finish()


def load_script(name: str):
    """A script of ``scripts/`` imported as a module (they are not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One kdlab cache per test session: MiniLM is extracted and teachers fine-tuned once."""
    return tmp_path_factory.mktemp("kdlab-cache")


def compose_config(overrides: List[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


def run_cli(args: List[str], env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    env.pop("WANDB_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "kdlab", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)


def refused_before_training(args: List[str], tmp_path: Path, data_dir: Path) -> str:
    """Run ``kdlab`` with an empty cache; assert it exits 2 (a user error) without having
    fine-tuned a teacher; return its stderr."""
    cache = tmp_path / "cache"
    out = run_cli([*args, "logger=none", f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={cache}"],
                  env_extra={"KDLAB_DATA_DIR": str(data_dir)})
    assert out.returncode == 2, out.stderr[-2000:]
    assert not (cache / "teachers").exists()  # the teacher was not fine-tuned
    return out.stderr
