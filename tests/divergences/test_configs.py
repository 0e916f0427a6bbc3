"""Every divergence option file fits the schema and builds its divergence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from kdlab.config import DivergenceConfig
from kdlab.divergences import get, names

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "divergence"
FILES = sorted(CONFIG_DIR.glob("*.yaml"))


def test_one_option_file_per_registered_divergence() -> None:
    assert {p.stem for p in FILES} >= set(names()) | {"none", "sinkhorn_sound"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_option_file_builds(path: Path) -> None:
    cfg = OmegaConf.merge(OmegaConf.structured(DivergenceConfig), OmegaConf.load(path))
    assert path.read_text().startswith("# ")  # a one-line description heads each file
    if cfg.name == "none":
        assert cfg.weight == 0.0 and not cfg.params
        return
    div = get(cfg.name, **OmegaConf.to_container(cfg.params))
    out = div(torch.randn(8, 3), torch.randn(8, 3))
    assert out.dim() == 0 and torch.isfinite(out)


def test_sinkhorn_option_is_the_published_recipe() -> None:
    cfg = OmegaConf.load(CONFIG_DIR / "sinkhorn.yaml")
    assert cfg.weight == 0.8
    assert dict(cfg.params) == dict(mode="faithful", temperature=2.0, epsilon=0.1, p=1, n_iters=20, scale=0.001, reduction="sum")
