"""A wheel of kdlab carries its configs and runs outside a checkout (``pip install kdlab-*.whl``,
``pip install git+...``), not only as the editable install of ``make install``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

CONFIGS = REPO / "kdlab" / "configs"


def _clean_env(**extra: str) -> dict:
    """The environment of a user's shell: no PYTHONPATH pointing back at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}, **extra)
    env.pop("WANDB_API_KEY", None)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel offline from a copy of the sources (the checkout gets no build/)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "kdlab", src / "kdlab", ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "--no-index", "-q", "-w", str(tmp / "dist"), str(src)],
                         capture_output=True, text=True, env=_clean_env())
    assert out.returncode == 0, out.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("kdlab-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed; its dependencies are read from
    this interpreter's site-packages (offline), after the venv's own, so ``kdlab`` is the
    wheel's. Returns the venv's ``bin`` directory."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                          "--no-index", "-q", str(wheel)], capture_output=True, text=True, env=_clean_env())
    assert out.returncode == 0, out.stderr[-3000:]
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site) / "kdlab_test_deps.pth").write_text("\n".join(deps) + "\n")
    return venv / "bin"


def test_wheel_contains_every_config_file(wheel):
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("kdlab/configs/")}
    expected = {f"kdlab/configs/{p.relative_to(CONFIGS).as_posix()}" for p in CONFIGS.rglob("*.yaml")}
    assert "kdlab/configs/config.yaml" in expected
    for group in ("teacher", "student", "divergence", "dataset", "hardware", "trainer", "logger", "experiment"):
        assert any(n.startswith(f"kdlab/configs/{group}/") for n in expected), group
    assert shipped == expected


def test_installed_wheel_runs_outside_the_checkout(installed, tmp_path):
    where = subprocess.run([str(installed / "python"), "-c", "import kdlab; print(kdlab.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=_clean_env())
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.parent)  # not the checkout's kdlab
    out = subprocess.run([str(installed / "kdlab"), "--help"], capture_output=True, text=True,
                         cwd=tmp_path, env=_clean_env())
    assert out.returncode == 0, out.stderr[-3000:]
    assert "experiment:" in out.stdout and "smoke" in out.stdout


@pytest.mark.slow
def test_installed_wheel_runs_the_smoke_experiment(installed, tmp_path, data_dir):
    run_dir = tmp_path / "run"
    out = subprocess.run([str(installed / "kdlab"), "experiment=smoke", "logger=none",
                          f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=900,
                         env=_clean_env(KDLAB_DATA_DIR=str(data_dir)))
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["task"] == "glue/sst2" and results["student"]["dev"]
