"""``trainer.on_policy``: refused where it cannot run (at composition or before any model is
loaded), and end to end on the token-family smoke presets with half the answers generated."""

import json

import pytest
from hydra.errors import ConfigCompositionException

from kdlab.config_keys import composition_key_error
from kdlab.errors import ConfigError
from kdlab.validation import validate
from tests.conftest import compose_config, run_cli

CAUSAL = ["output_dir=/tmp/x", "experiment=smoke_causal"]


def test_a_schedule_typo_is_refused_while_composing():
    with pytest.raises(ConfigCompositionException) as e:
        compose_config([*CAUSAL, "trainer.on_policy.schedule=adaptve"])
    assert str(composition_key_error(e.value)) == \
        "trainer.on_policy.schedule='adaptve': valid values are fixed, adaptive"


@pytest.mark.parametrize("overrides, pattern", [
    (["output_dir=/tmp/x", "trainer.on_policy.lmbda=0.5"],  # the default teacher is an encoder
     r"trainer.on_policy.lmbda=0.5 samples answers from the student: it needs teacher.family=seq2seq or causal.*"
     r"set trainer.on_policy.lmbda=0"),
    ([*CAUSAL, "trainer.on_policy.lmbda=0.5", "trainer.cache_teacher_outputs=true", "trainer.teacher_cache.top_k=8"],
     r"teacher-output cache cannot hold; set trainer.teacher_cache.top_k=null"),
    ([*CAUSAL, "trainer.on_policy.schedule=adaptive", "trainer.teacher_cache.top_k=8"],
     r"trainer.on_policy.schedule=adaptive: .*trainer.teacher_cache.top_k=null"),
    ([*CAUSAL, "trainer.on_policy.lmbda=1.5"], r"trainer.on_policy.lmbda=1.5: must be in \[0, 1\]"),
    ([*CAUSAL, "trainer.on_policy.lmbda=0.5", "trainer.on_policy.top_p=0"], r"trainer.on_policy.top_p=0.0"),
    ([*CAUSAL, "trainer.on_policy.lmbda=0.5", "trainer.on_policy.max_new_tokens=0"],
     r"trainer.on_policy.max_new_tokens=0: must be >= 1"),
    ([*CAUSAL, "trainer.on_policy.lmbda=0.5", "student.tokenizer=bytes"], r"set student.tokenizer=teacher"),
    ([*CAUSAL, "trainer.on_policy.schedule=adaptive"], r"set trainer.eval_strategy=epoch"),
])
def test_what_on_policy_cannot_serve_is_refused_in_one_line(overrides, pattern):
    cfg = compose_config(overrides)
    with pytest.raises(ConfigError, match=pattern) as e:
        validate(cfg)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("overrides", [
    ["output_dir=/tmp/x"],  # off-policy on the encoder family
    [*CAUSAL, "trainer.on_policy.lmbda=0", "trainer.teacher_cache.top_k=8"],  # lmbda 0: a cache is fine
    [*CAUSAL, "trainer.on_policy.lmbda=0.5"],
    [*CAUSAL, "trainer.on_policy.schedule=adaptive", "trainer.eval_strategy=epoch"],
])
def test_what_on_policy_can_serve_is_accepted(overrides):
    validate(compose_config(overrides))


SHORT = ["teacher.finetune.max_steps=2", "teacher.finetune.max_train_samples=16", "dataset.max_train_samples=32",
         "dataset.max_eval_samples=8", "trainer.max_steps=2", "trainer.log_every=1", "trainer.batch_size=8",
         "trainer.save_student=false", "logger=none", "trainer.on_policy.lmbda=0.5",
         "trainer.on_policy.max_new_tokens=3"]


def run_on_policy(preset: str, tmp_path, data_dir, *extra: str) -> list:
    out = run_cli([f"experiment={preset}", f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}",
                   *SHORT, *extra], env_extra={"KDLAB_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["steps"] == 2
    assert res["on_policy"]["generated"] == 0.5  # 4 of 8 rows, each step
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "student/on_policy/generated" in r]


def test_causal_smoke_distils_with_half_the_answers_generated(tmp_path, data_dir):
    rows = run_on_policy("smoke_causal", tmp_path, data_dir)
    assert [r["student/on_policy/generated"] for r in rows] == [0.5, 0.5]  # 4 of 8 rows, each step
    assert all(r["student/on_policy/lmbda"] == 0.5 for r in rows)
    assert all(r["student/loss"] > 0 for r in rows)


@pytest.mark.slow
def test_seq2seq_smoke_distils_with_half_the_answers_generated(tmp_path, data_dir):
    rows = run_on_policy("smoke_seq2seq", tmp_path, data_dir)
    assert [r["student/on_policy/generated"] for r in rows] == [0.5, 0.5]
    assert all(r["student/loss"] > 0 for r in rows)


@pytest.mark.slow
def test_adaptive_schedule_logs_the_dev_loss_after_each_evaluation(tmp_path, data_dir):
    rows = run_on_policy("smoke_causal", tmp_path, data_dir, "trainer.on_policy.schedule=adaptive",
                         "trainer.eval_strategy=steps", "trainer.eval_every=1")
    out = tmp_path / "run" / "metrics.jsonl"
    evals = [json.loads(line) for line in out.read_text().splitlines() if "student/on_policy/dev_loss" in line]
    assert len(evals) == 2 and all(r["student/on_policy/dev_loss"] > 0 for r in evals)
    assert rows and all(0.5 <= r["student/on_policy/lmbda"] <= 1.0 for r in rows)


@pytest.mark.parametrize("preset", ["gkd_onpolicy", "distillm", "cpu/gkd_onpolicy", "cpu/distillm"])
def test_presets_carry_the_published_settings_and_validate(preset):
    cfg = compose_config(["output_dir=/tmp/x", f"experiment=methods/{preset}", "teacher.path=t", "student.path=s"])
    validate(cfg)
    op = cfg.trainer.on_policy
    assert cfg.objective.alpha == 0.0 and cfg.objective.ce_weight == 0.0  # the distillation term alone
    assert cfg.teacher.family == "causal" and op.top_p == 1.0
    if preset.endswith("gkd_onpolicy"):  # TRL GKDConfig: lmbda 0.5, beta 0.5, temperature 0.9, 128 tokens
        assert cfg.divergence.name == "js" and cfg.divergence.params.beta == 0.5
        assert (op.schedule, op.lmbda, op.temperature) == ("fixed", 0.5, 0.9)
        assert op.max_new_tokens == (16 if preset.startswith("cpu/") else 128)
    else:  # DistiLLM: skew KL 0.1, init-threshold 0, +0.1 when the dev loss rose by loss-eps 0.1
        assert cfg.divergence.name == "skew_kl" and cfg.divergence.params.skew == 0.1
        assert (op.schedule, op.lmbda, op.lmbda_step, op.loss_eps, op.temperature) == ("adaptive", 0.0, 0.1, 0.1, 1.0)
        assert cfg.trainer.eval_strategy != "end"


def test_a_student_with_another_tokenizer_is_refused_once_both_are_loaded():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from kdlab.models.byte_tokenizer import byte_tokenizer
    from kdlab.on_policy import check_tokenizers

    student = byte_tokenizer()
    teacher = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0, "yes": 1}, "[UNK]")),
                                      unk_token="[UNK]")
    on = compose_config([*CAUSAL, "trainer.on_policy.lmbda=0.5"])
    with pytest.raises(ConfigError, match=r"student's tokenizer \(260 tokens\) is not the teacher's \(2\)") as e:
        check_tokenizers(on, teacher, student)
    assert "set trainer.on_policy.lmbda=0" in str(e.value)
    check_tokenizers(on, student, byte_tokenizer())  # the same vocabulary
    check_tokenizers(compose_config(CAUSAL), teacher, student)  # off-policy: ULD may pair tokenizers
