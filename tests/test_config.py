"""Config composition and validation: typos and bad values fail before any work."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from kdlab.config_keys import composition_key_error
from kdlab.errors import ConfigError, DataError
from kdlab.objective import build_objective
from kdlab.runner import run
from kdlab.validation import validate
from tests.conftest import compose_config


def test_default_config_composes_with_types():
    cfg = compose_config(["output_dir=/tmp/x"])
    assert cfg.teacher.name == "minilm"
    assert cfg.student.layers == [0, 5]
    assert cfg.divergence.name == "sinkhorn"
    assert cfg.dataset.name == "glue/sst2"
    assert OmegaConf.get_type(cfg.trainer).__name__ == "TrainerConfig"
    validate(cfg)


def test_experiment_preset_overrides_main_config():
    cfg = compose_config(["experiment=smoke"])
    assert cfg.experiment_name == "smoke"
    assert cfg.trainer.max_steps == 24
    assert cfg.dataset.max_train_samples == 256


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("trainer.lerning_rate=1e-3", "lerning_rate"),  # misspelt key
        ("divergence.weight=hot", "hot"),  # ill-typed value
        ("divergence=nope", "nope"),  # unknown group option
        ("objective.kd=hot", "hot"),  # replacing a typed node by a string
    ],
)
def test_schema_rejects_before_any_work(override, pattern):
    with pytest.raises(ConfigCompositionException, match=pattern) as e:
        compose_config([override])
    assert pattern in str(e.value) or pattern in str(e.value.__cause__)


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (["objective.alpha=1.5"], r"objective.alpha=1.5: must be in \[0, 1.0\]"),
        (["objective.kd.temperature=-1"], r"objective.kd.temperature=-1.0: must be > 0"),
        (["divergence.weight=-0.1"], r"divergence.weight=-0.1"),
        (["dataset.name=glue/nope"], r"unknown dataset 'glue/nope'.*glue/sst2"),
        (["teacher.name=gpt9"], r"unknown teacher 'gpt9'.*minilm"),
        (["trainer.lr=0"], r"trainer.lr=0.0: must be > 0"),
    ],
)
def test_validation_names_key_value_and_range(overrides, pattern):
    cfg = compose_config(["output_dir=/tmp/x", *overrides])
    with pytest.raises(ConfigError, match=pattern):
        validate(cfg)
        build_objective(cfg)


@pytest.mark.parametrize("override, valid", [
    ("hardware.device=cdua", "cpu, cuda"),
    ("hardware.precision=fp8", "fp32, bf16, fp16"),
    ("dataset.truncation=longest", "longest_first, only_first, only_second"),
    ("dataset.on_bad_row=ignore", "error, skip"),
    ("dataset.rank_scoring=max", "sum, mean"),
    ("trainer.eval_strategy=step", "end, epoch, steps"),
    ("trainer.select=bset", "last, best"),
    ("trainer.on_nan=skp", "stop, skip"),
    ("teacher.finetune.on_nan=ignore", "stop, skip"),
])
def test_a_choice_outside_its_values_is_refused_while_composing(override, valid):
    """Closed choices are enums of the schema: the typo never reaches the run, and the
    CLI's message names the key, the value and the valid values."""
    with pytest.raises(ConfigCompositionException) as e:
        compose_config([override])
    key, value = override.split("=")
    problem = composition_key_error(e.value)
    assert str(problem) == f"{key}={value!r}: valid values are {valid}"


def test_choices_keep_their_plain_words():
    cfg = compose_config(["output_dir=/tmp/x", "hardware.precision=bf16", "trainer.select=best"])
    assert cfg.hardware.precision == "bf16" and cfg.trainer.select == "best"
    assert OmegaConf.to_yaml(cfg.hardware).startswith("device: cpu\nprecision: bf16\n")


def test_the_teachers_fine_tuning_runs_its_own_explicit_loop():
    """teacher.finetune is a whole loop config: on_nan and keep_last are its own (they were
    silently the defaults), logging follows trainer unless set; evaluation keys, which a
    fine-tuning without dev set would ignore, are refused."""
    from kdlab.assembly import loop_config

    cfg = compose_config(["output_dir=/tmp/x", "experiment=smoke", "teacher.finetune.on_nan=skip",
                          "teacher.finetune.keep_last=5", "trainer.on_nan=stop"])
    loop = loop_config(cfg.teacher.finetune)
    assert (loop.on_nan, loop.keep_last, loop.log_every, loop.progress) == ("skip", 5, 2, False)
    assert loop_config(cfg.trainer).on_nan == "stop" and loop_config(cfg.trainer).seed == cfg.seed
    cfg = compose_config(["output_dir=/tmp/x", "teacher.finetune.select=best"])
    with pytest.raises(ConfigError, match=r"teacher.finetune.select=best: the teacher's fine-tuning is not evaluated"):
        validate(cfg)


def test_divergence_parameters_checked_at_build():
    cfg = compose_config(["output_dir=/tmp/x", "+divergence.params.epsilonn=0.1"])
    with pytest.raises(ConfigError, match="epsilonn"):
        build_objective(cfg)
    cfg = compose_config(["output_dir=/tmp/x", "divergence.params.temperature=-2"])
    with pytest.raises(ConfigError, match="temperature"):
        build_objective(cfg)


def test_data_dir_without_the_task_names_the_file(tmp_path, cache_dir):
    (tmp_path / "glue").mkdir()
    cfg = compose_config([f"output_dir={tmp_path / 'run'}", f"dataset.data_dir={tmp_path}",
                          f"cache_dir={cache_dir}", "logger=none", "dataset=glue/rte"])
    with pytest.raises(DataError, match=r"RTE.*train.tsv"):
        run(cfg)
    assert not (tmp_path / "run" / "results.json").exists()


def test_cuda_on_a_machine_without_one_is_refused():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = compose_config(["output_dir=/tmp/x", "hardware=cuda"])
    with pytest.raises(ConfigError, match="no CUDA device; use hardware=cpu"):
        validate(cfg)
