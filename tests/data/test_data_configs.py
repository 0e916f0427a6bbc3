"""Every task has a ``dataset/`` option that composes into the typed config, and vice versa."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from kdlab.cli import CONFIG_DIR
from kdlab.data import get_task, task_names

OPTIONS = sorted(
    str(p.relative_to(Path(CONFIG_DIR) / "dataset").with_suffix(""))
    for p in (Path(CONFIG_DIR) / "dataset").rglob("*.yaml")
)


def test_one_option_per_task():
    assert OPTIONS == task_names()


@pytest.mark.parametrize("option", OPTIONS)
def test_option_composes(option):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset={option}"])
    assert cfg.dataset.name == option
    assert get_task(cfg.dataset.name).name == option
    assert cfg.dataset.max_length > 0
