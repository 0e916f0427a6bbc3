"""The command line on small original-format files: MultiRC trained and scored with the
encoder family (its per-question exact match), AX-g trained on RTE and scored on its
pairs, and a task a family cannot run refused before any model is loaded."""

from __future__ import annotations

import json

import pytest
from data_samples import write_samples

from tests.conftest import refused_before_training, run_cli


@pytest.mark.slow
def test_multirc_smoke_with_the_encoder_family(tmp_path, cache_dir):
    data = write_samples(tmp_path / "data", "superglue/multirc")
    out = run_cli(["experiment=smoke", "dataset=superglue/multirc", f"dataset.data_dir={data}",
                   f"cache_dir={cache_dir}", "logger=none", f"hydra.run.dir={tmp_path / 'run'}",
                   "teacher.finetune.max_steps=2", "trainer.max_steps=2"])
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    for who in ("teacher", "student", "majority"):
        assert set(res[who]["dev"]) == {"f1a", "exact_match"}, who


@pytest.mark.slow
def test_axg_trains_on_rte_and_reports_gender_parity(tmp_path, cache_dir):
    data = write_samples(write_samples(tmp_path / "data", "superglue/axg"), "superglue/rte")
    out = run_cli(["experiment=smoke", "dataset=superglue/axg", f"dataset.data_dir={data}",
                   f"cache_dir={cache_dir}", "logger=none", f"hydra.run.dir={tmp_path / 'run'}",
                   "teacher.finetune.max_steps=2", "trainer.max_steps=2"])
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["task"] == "superglue/axg"
    for who in ("teacher", "student"):
        assert set(res[who]["dev"]) == {"accuracy", "gender_parity"}, who


def test_encoder_family_refuses_a_multiple_choice_task(tmp_path):
    data = write_samples(tmp_path / "data", "superglue/copa")
    err = refused_before_training(["experiment=smoke", "dataset=superglue/copa"], tmp_path, data)
    assert "kdlab: error: dataset=superglue/copa is a multiple_choice task" in err
    assert "teacher.family=seq2seq or causal" in err
    assert not (tmp_path / "cache" / "models").exists()  # refused on the config: no model loaded
