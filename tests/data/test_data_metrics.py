"""Every metric against scikit-learn / SciPy (or hand-computed official values) on fixed predictions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from kdlab.data import compute_metrics, get_task, task_names
from kdlab.data.metrics import normalize_answer, token_f1

rng = np.random.RandomState(0)
REF2, PRED2 = rng.randint(0, 2, 200), rng.randint(0, 2, 200)
REF3, PRED3 = rng.randint(0, 3, 200), rng.randint(0, 3, 200)
SCORE_REF = np.round(rng.uniform(0, 5, 300), 1)  # rounded: ties exercise the rank averaging
SCORE_PRED = np.round(SCORE_REF + rng.normal(0, 1.5, 300), 1)


def test_cola_matthews():
    m = compute_metrics("glue/cola", PRED2, REF2)
    assert m["matthews_correlation"] == pytest.approx(matthews_corrcoef(REF2, PRED2))
    assert m["accuracy"] == pytest.approx(accuracy_score(REF2, PRED2))


@pytest.mark.parametrize("task", ["glue/mrpc", "glue/qqp"])
def test_f1_and_accuracy(task):
    m = compute_metrics(task, PRED2, REF2)
    assert m["f1"] == pytest.approx(f1_score(REF2, PRED2))
    assert m["accuracy"] == pytest.approx(accuracy_score(REF2, PRED2))


def test_stsb_correlations():
    m = compute_metrics("glue/stsb", SCORE_PRED, SCORE_REF)
    assert m["pearson"] == pytest.approx(pearsonr(SCORE_PRED, SCORE_REF)[0])
    assert m["spearmanr"] == pytest.approx(spearmanr(SCORE_PRED, SCORE_REF)[0])


def test_three_class_matthews_for_the_diagnostic():
    m = compute_metrics("glue/ax", PRED3, REF3)
    assert m["matthews_correlation"] == pytest.approx(matthews_corrcoef(REF3, PRED3))


@pytest.mark.parametrize("task", ["glue/sst2", "glue/rte", "glue/qnli", "glue/wnli", "glue/mnli"])
def test_accuracy(task):
    n = get_task(task).num_labels
    ref, pred = REF3 % n, PRED3 % n
    assert compute_metrics(task, pred, ref) == {
        "accuracy": pytest.approx(accuracy_score(ref, pred))
    }


def test_degenerate_cases_follow_sklearn():
    const = np.zeros(10, dtype=int)
    assert compute_metrics("glue/cola", const, REF2[:10])["matthews_correlation"] == 0.0
    assert compute_metrics("glue/mrpc", const, const)["f1"] == 0.0


def test_every_task_returns_its_main_metric():
    for name in task_names():
        assert get_task(name).metric in get_task(name).metrics


def test_squad_normalisation():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple a day") == "apple day"
    assert token_f1("the Barack Obama", "Obama") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("Paris", "London") == 0.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="predictions for"):
        compute_metrics("glue/sst2", [0, 1], [0])
    with pytest.raises(ValueError, match="unlabelled"):
        compute_metrics("glue/sst2", [0, 1], [0, -1])
