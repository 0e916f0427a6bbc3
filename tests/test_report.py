"""The end-of-run table names the distilled student by the terms it learned from."""

import pytest

from kdlab.report import distilled_by


@pytest.mark.parametrize("alpha, divergence, name", [
    (1.0, "none", "kd"),  # the main job: the teacher's outputs alone
    (0.9, "sinkhorn", "kd + sinkhorn"),
    (0.0, "js", "js"),
    (0.0, "none", "none"),
])
def test_the_student_is_named_by_its_distillation_terms(alpha, divergence, name):
    assert distilled_by({"divergence": divergence, "config": {"objective": {"alpha": alpha}}}) == name
