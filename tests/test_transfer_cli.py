"""End to end with transfer data, shrunk: the distilled student trains on labelled plus
transfer rows, the baseline student on the labelled rows only, and the teacher's outputs
on both go through the teacher-output cache. Slow (CLI runs): `make test-slow`."""

import json

import numpy as np
import pytest

from tests.conftest import run_cli

SHRUNK = ["dataset.max_train_samples=32", "teacher.finetune.max_train_samples=32", "teacher.finetune.max_steps=2",
          "dataset.max_eval_samples=16", "trainer.max_steps=-1", "trainer.epochs=1", "trainer.batch_size=16",
          "logger=none"]


def run(tmp_path, data_dir, *args):
    out = run_cli([*args, *SHRUNK, f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}"],
                  env_extra={"KDLAB_DATA_DIR": str(data_dir)})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((tmp_path / "run" / "results.json").read_text())


@pytest.mark.slow
def test_unlabelled_transfer_reaches_the_distilled_student_only(tmp_path, data_dir):
    res = run(tmp_path, data_dir, "experiment=smoke", "transfer=unlabelled", "transfer.max_samples=32",
              "trainer.baseline_student=true")
    assert res["transfer"] == {"name": "unlabelled", "examples": 32}
    assert res["steps"] == 4  # one epoch over 32 labelled + 32 transfer rows at batch 16
    assert res["baseline_student"]["best_step"] == 2  # one epoch over the 32 labelled rows
    (cached,) = (tmp_path / "cache" / "teacher_outputs").glob("*.npy")
    assert np.load(cached).shape == (64, 2)  # teacher logits of labelled and transfer rows


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["smoke_seq2seq", "smoke_causal"])
def test_token_families_distil_augmented_copies(tmp_path, data_dir, experiment):
    res = run(tmp_path, data_dir, f"experiment={experiment}", "dataset=glue/sst2", "transfer=augment",
              "transfer.augment.copies=1")
    assert res["transfer"] == {"name": "augment", "examples": 32}
    assert res["steps"] == 4
