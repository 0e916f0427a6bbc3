"""Shared fixtures: configs composed with Hydra's API, the real data dir, a cache dir."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "glue").is_dir():
        pytest.skip(f"real GLUE files not found at {DATA_DIR} (set KDLAB_DATA_DIR)")
    return DATA_DIR


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
