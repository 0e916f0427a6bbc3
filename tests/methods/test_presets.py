"""Method presets compose and build their objectives; preconditions fail at config time;
the objective hands labels and progress to the terms that need them; end-to-end runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdlab.errors import ConfigError
from kdlab.families.base import Outputs
from kdlab.methods import LABEL_TERMS
from kdlab.objective import Objective, Term, build_objective
from tests.conftest import compose_config, refused_before_training, run_cli

PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "experiment" / "methods"
PRESETS = sorted(str(p.relative_to(PRESET_DIR.parent).with_suffix("")) for p in PRESET_DIR.rglob("*.yaml")
                 if not p.stem.endswith("sizes"))  # shared sizes files are not methods
CPU = [p for p in PRESETS if p.startswith("methods/cpu/")]
# One preset end to end in the default suite (the README's method command); the rest are slow.
DEFAULT_SUITE = {"methods/cpu/ted"}
# CPU-only comparison rows (an offline run on the online presets' data and budget)
CPU_ONLY = {"kd_offline"}
# the online phase trains with its own losses (kdlab.online), not objective terms
ONLINE = {"dml", "bdkd_online"}


def test_one_published_and_one_cpu_preset_per_method():
    published = {Path(p).name for p in PRESETS if p not in CPU}
    assert published == {Path(p).name for p in CPU} - CPU_ONLY
    assert published >= {"skew_kl", "skew_rkl", "gkd", "akl", "dkd", "pld", "uld", "emo", "distilbert", "pkd", "ted"}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_builds(preset):
    cfg = compose_config([f"experiment={preset}"])
    objective = build_objective(cfg)
    assert cfg.experiment_name == Path(preset).name
    assert bool(objective.terms) != (Path(preset).name in ONLINE)
    if preset in CPU:
        assert cfg.teacher.name in ("minilm", "tiny") and cfg.trainer.max_steps > 0


def test_published_settings():
    cfg = compose_config(["experiment=methods/pkd"])
    assert (cfg.objective.ce_weight, cfg.divergence.weight, cfg.divergence.params.temperature) == (0.3, 0.35, 10.0)
    assert cfg.objective.terms.pt.weight == 500.0 and cfg.student.layers == [0, 1, 2, 3, 4, 5]
    cfg = compose_config(["experiment=methods/distilbert"])
    assert cfg.student.layers == [0, 2, 4, 7, 9, 11] and cfg.divergence.weight == 5.0
    assert cfg.divergence.params.temperature == 2.0 and cfg.divergence.params.reduction == "batchmean"
    cfg = compose_config(["experiment=methods/dkd"])
    assert dict(cfg.divergence.params) == dict(alpha=1.0, beta=8.0, temperature=4.0, warmup=20)
    for name, ce in [("pld", 0.0), ("emo", 0.0), ("skew_kl", 0.0), ("uld", 1.0)]:
        assert compose_config([f"experiment=methods/{name}"]).objective.ce_weight == ce
    assert compose_config(["experiment=methods/uld"]).divergence.weight == 1.5


@pytest.mark.parametrize("overrides, message", [
    (["divergence=labels/dkd", "dataset=glue/stsb"], "regression task"),
    (["divergence=labels/pld", "dataset=glue/stsb"], "regression task"),
    (["experiment=methods/pld", "teacher=tiny_gpt2", "dataset=superglue/copa"], "teacher.family=encoder"),
    (["divergence=uld"], "answer spans"),
    (["objective.ce_weight=-1"], "objective.ce_weight"),
])
def test_unmet_preconditions_fail_at_config_time(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_objective(compose_config(overrides))


def test_feature_term_for_different_widths_fails_before_training():
    from tests.methods.test_feature_methods import bert
    objective = build_objective(compose_config(["experiment=methods/cpu/distilbert"]))
    with pytest.raises(ConfigError, match="same hidden width"):
        objective.bind(bert(4, hidden=16), bert(2, hidden=8), ("encoder",))


def test_objective_passes_labels_and_progress():
    dkd = LABEL_TERMS.build("dkd", warmup=2)
    dkd.set_training_epochs(4)
    objective = Objective(1.0, [Term("dkd", 1.0, dkd)])
    z_s, z_t, y = torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 2, 3])
    with pytest.raises(ValueError, match="needs gold labels"):
        objective(Outputs(z_s), torch.tensor(0.0), Outputs(z_t))
    objective.set_progress(0.0, 0, 4)  # epoch 1 of 4: factor 1/2
    half = objective(Outputs(z_s), torch.tensor(0.0), Outputs(z_t), labels=y)[1]["dkd"]
    objective.set_progress(0.5, 2, 4)  # epoch 3: factor 1
    full = objective(Outputs(z_s), torch.tensor(0.0), Outputs(z_t), labels=y)[1]["dkd"]
    torch.testing.assert_close(half, 0.5 * full)


def test_build_objective_sets_dkd_epochs():
    objective = build_objective(compose_config(["experiment=methods/dkd", "trainer.epochs=5"]))
    assert objective.terms[0].module.epochs == 5.0


@pytest.mark.parametrize("preset", [
    pytest.param(p, marks=[] if p in DEFAULT_SUITE else [pytest.mark.slow]) for p in CPU])
def test_cpu_preset_runs(preset, tmp_path, data_dir, cache_dir):
    out = run_cli([f"experiment={preset}", "trainer.max_steps=3", "trainer.log_every=1", "logger=none",
                   f"hydra.run.dir={tmp_path}", f"cache_dir={cache_dir}"],
                  env_extra={"KDLAB_DATA_DIR": str(data_dir)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "results.json").is_file()


def test_pair_preconditions_fail_before_the_teacher_is_fine_tuned(tmp_path, data_dir):
    """A feature term the pair cannot serve stops the run before any training."""
    stderr = refused_before_training(["experiment=methods/cpu/distilbert", "student=shrunk"], tmp_path, data_dir)
    assert "same hidden width (teacher 384, student 128)" in stderr
