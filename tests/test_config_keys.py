"""Every key of a run's config is declared by the schema, however it was added: a plain
override and a YAML file are refused at composition (the struct flag); ``+key`` / ``++key``,
which lift that flag, are refused by ``validate`` before any work. The command line reports
each the same way: one ``kdlab: error:`` line naming the valid keys, status 2."""

import re
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from kdlab.config_keys import check_known_keys, composition_key_error
from kdlab.errors import ConfigError
from kdlab.validation import validate
from tests.conftest import compose_config, refused_before_training, run_cli


@pytest.mark.parametrize(
    "overrides, key, valid",
    [
        (["+trainer.nosuchkey=1"], "'trainer.nosuchkey'", "valid keys of trainer: epochs, max_steps"),
        (["++trainer.nosuchkey=1"], "'trainer.nosuchkey'", "cache_teacher_outputs"),
        (["+teacher.finetune.lrr=1"], r"'teacher.finetune.lrr' \(did you mean lr\?\)", "of teacher.finetune"),
        (["++objective.kd.foo.bar=2"], "'objective.kd.foo'", "valid keys of objective.kd: temperature, t2, anneal"),
        (["+nosuchkey=1"], "'nosuchkey'", "valid keys at the top level: teacher, student"),
        (["experiment=methods/cpu/ted", "+objective.terms.ted.zzz=1"], "'objective.terms.ted.zzz'",
         "valid keys of objective.terms.ted: name, weight, params"),
    ],
)
def test_keys_added_with_plus_are_refused_naming_the_valid_keys(overrides, key, valid):
    cfg = compose_config(["output_dir=/tmp/x", *overrides])  # composes: + lifts the struct flag
    with pytest.raises(ConfigError, match=f"unknown config key {key}.*{valid}"):
        validate(cfg)


def test_free_form_nodes_take_any_key():
    cfg = compose_config(["output_dir=/tmp/x", "experiment=methods/cpu/ted", "+divergence.params.anything=1",
                          "+teacher.overrides.n_layer=2", "++student.overrides.x.y=3",
                          "+objective.terms.ted.params.extra=1", "+objective.terms={rkl: {name: rkl, weight: 0.5}}"])
    check_known_keys(cfg)
    check_known_keys(compose_config(["output_dir=/tmp/x"]))  # and the defaults


def test_every_preset_holds_schema_keys_only():
    presets = Path(__file__).resolve().parent.parent / "kdlab" / "configs" / "experiment"
    names = [p.relative_to(presets).with_suffix("").as_posix() for p in presets.rglob("*.yaml")]
    names = [n for n in names if "/" not in n or n.startswith("methods/")]  # full presets, not parts
    assert "smoke" in names
    for name in names:
        check_known_keys(compose_config([f"experiment={name}"]))


def typo_preset(tmp_path: Path) -> str:
    """An experiment file with an unknown key, on Hydra's search path."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "typo.yaml").write_text("# @package _global_\ntrainer:\n  nosuchkey: 1\n")
    return f"hydra.searchpath=[file://{tmp_path}]"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.lerning_rate=1"], "unknown config key 'trainer.lerning_rate': .*valid keys of trainer: epochs"),
        (["objective.kd.temprature=2"], r"'objective.kd.temprature' \(did you mean temperature\?\)"),
        (["nosuchkey=1"], "'nosuchkey'.*valid keys at the top level: teacher"),
        (["experiment=typo"], "unknown config key 'trainer.nosuchkey'.*valid keys of trainer: epochs"),
    ],
)
def test_keys_refused_at_composition_name_the_valid_keys(overrides, message, tmp_path):
    with pytest.raises(ConfigCompositionException) as e:
        compose_config([typo_preset(tmp_path), *overrides])
    problem = composition_key_error(e.value)
    assert isinstance(problem, ConfigError)
    assert re.search(message, str(problem)), problem


@pytest.mark.parametrize("override", ["divergence=nope", "objective.kd=hot"])
def test_other_composition_errors_stay_hydras(override):
    with pytest.raises(Exception) as e:  # an unknown option; a typed node replaced by a string
        compose_config([override])
    assert composition_key_error(e.value) is None


@pytest.mark.parametrize("args", [["experiment=smoke", "trainer.lerning_rate=1"], ["experiment=typo"]])
def test_cli_reports_keys_refused_at_composition_like_other_user_errors(args, tmp_path):
    out = run_cli([typo_preset(tmp_path), *args, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"])
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith("kdlab: error: unknown config key 'trainer.") and out.stderr.count("\n") == 1
    assert "valid keys of trainer: epochs" in out.stderr and "use +" not in out.stderr


def test_cli_leaves_other_composition_errors_to_hydra(tmp_path):
    out = run_cli(["divergence=nope", f"hydra.run.dir={tmp_path}"])
    assert out.returncode == 1 and "Could not find 'divergence/nope'" in out.stderr


def test_cli_refuses_a_key_added_with_plus_before_any_work(tmp_path, data_dir):
    err = refused_before_training(["experiment=smoke", "+trainer.nosuchkey=1"], tmp_path, data_dir)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("kdlab: error: unknown config key 'trainer.nosuchkey'"), err[-2000:]
    assert "valid keys of trainer: epochs" in lines[-1] and "Traceback" not in err
