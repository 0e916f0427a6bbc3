"""The main job's preset (`make run`): one labelled budget for the teacher and both
students, transfer rows for the distilled student only, an objective that reads them."""

import pytest

from kdlab.data import transfer
from kdlab.objective import build_objective
from tests.conftest import compose_config


@pytest.mark.parametrize("seed", [0, 2])
def test_main_job_gives_teacher_and_students_the_same_labelled_rows(seed):
    cfg = compose_config(["experiment=glue_minilm", f"seed={seed}", "output_dir=/tmp/x"])
    # the teacher's fine-tuning draws the same subsample as the students (size and seed)
    assert cfg.teacher.finetune.max_train_samples == cfg.dataset.max_train_samples == 1000
    assert cfg.teacher.finetune.seed == seed
    assert cfg.transfer.name == "unlabelled" and cfg.transfer.max_samples == 20000
    assert cfg.trainer.baseline_student and cfg.trainer.max_steps > 0  # both students: the same steps
    objective = build_objective(cfg)
    transfer.check(cfg, objective)  # the objective learns from the transfer rows
    # the distilled student learns from the teacher's outputs alone: KD at T = 2, no CE
    assert objective.ce_weight == 0.0
    assert [(t.name, t.weight) for t in objective.terms] == [("kd", 1.0)]
