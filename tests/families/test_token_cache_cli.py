"""End to end: `kdlab experiment=smoke_causal` / `smoke_seq2seq` (shortened) with the top-k
token-level teacher cache: written once, reused by the next run, reported in results.json;
a term the cache cannot serve is refused before the teacher is fine-tuned."""

import json

import pytest

from tests.conftest import refused_before_training, run_cli

SHORT = ["teacher.finetune.max_steps=4", "trainer.max_steps=4", "dataset.max_train_samples=64",
         "dataset.max_eval_samples=16", "logger=none", "trainer.cache_teacher_outputs=true",
         "trainer.teacher_cache.top_k=64"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["smoke_causal", "smoke_seq2seq"])
def test_preset_with_the_token_cache_writes_reuses_and_reports_it(preset, tmp_path, data_dir):
    cache = tmp_path / "cache"
    args = [f"experiment={preset}", "divergence=kl", f"cache_dir={cache}", *SHORT]
    env = {"KDLAB_DATA_DIR": str(data_dir)}
    first = run_cli([*args, f"hydra.run.dir={tmp_path / 'a'}"], env_extra=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "token-level teacher cache written" in first.stderr + first.stdout
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    tc = res["teacher_cache"]
    assert tc["k"] == 64 and tc["kind"] == "token_top_k" and tc["tokens"] > 0
    assert tc["bytes_per_token"] <= 300
    assert f"{tc['bytes_per_token']:.1f} bytes per token" in first.stderr + first.stdout  # the log
    (stored,) = (cache / "teacher_outputs").iterdir()
    second = run_cli([*args, f"hydra.run.dir={tmp_path / 'b'}"], env_extra=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "token-level teacher cache read from" in second.stderr + second.stdout
    assert [p.name for p in (cache / "teacher_outputs").iterdir()] == [stored.name]
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    kl = [r["student/kl"] for r in rows if "student/kl" in r]
    assert kl and all(v >= 0 for v in kl)


def test_a_term_the_cache_cannot_serve_is_refused_before_training(tmp_path, data_dir):
    err = refused_before_training(["experiment=smoke_seq2seq", "trainer.teacher_cache.top_k=64"], tmp_path, data_dir)
    assert "sinkhorn" in err and "trainer.teacher_cache.top_k=null" in err
