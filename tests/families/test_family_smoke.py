"""End to end: `kdlab experiment=smoke_seq2seq` and `experiment=smoke_causal` (shortened),
on real SST-2 / COPA, offline, with the results.json contract of the encoder smoke run."""

import json

import pytest

from tests.conftest import run_cli
from tests.test_smoke import RESULT_KEYS

SHORT = ["teacher.finetune.max_steps=8", "trainer.max_steps=8", "trainer.log_every=1",
         "dataset.max_train_samples=128", "dataset.max_eval_samples=32", "logger=none"]
PRESETS = {"smoke_seq2seq": ("glue/sst2", "sinkhorn"), "smoke_causal": ("superglue/copa", "kl")}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_distils_and_writes_results(preset, tmp_path, data_dir, cache_dir):
    task, divergence = PRESETS[preset]
    out = run_cli([f"experiment={preset}", f"hydra.run.dir={tmp_path}", f"cache_dir={cache_dir}", *SHORT],
                  env_extra={"KDLAB_DATA_DIR": str(data_dir)})
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert RESULT_KEYS <= set(res)
    assert res["task"] == task and res["divergence"] == divergence and res["steps"] == 8
    assert res["teacher"]["params"] > res["student"]["params"] > 0
    for who in ("teacher", "student"):
        assert 0.0 <= res[who]["dev"]["accuracy"] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    student = [r for r in rows if "student/loss" in r]
    assert [r["phase_step"] for r in student] == list(range(1, 9))
    # the distillation terms go down over the steps (first two vs last two logged steps)
    for term in ("kd", divergence):
        values = [r[f"student/{term}"] for r in student]
        assert sum(values[-2:]) < sum(values[:2]), (term, values)
