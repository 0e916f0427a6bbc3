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


def test_cb_macro_f1():
    m = compute_metrics("superglue/cb", PRED3, REF3)
    assert m["f1_macro"] == pytest.approx(f1_score(REF3, PRED3, average="macro"))
    assert m["accuracy"] == pytest.approx(accuracy_score(REF3, PRED3))


def test_axb_matthews():
    m = compute_metrics("superglue/axb", PRED2, REF2)
    assert m["matthews_correlation"] == pytest.approx(matthews_corrcoef(REF2, PRED2))


def test_multirc_f1a_and_exact_match():
    groups = np.repeat(np.arange(40), 5)  # 40 questions of 5 answer options
    pred = REF2.copy()
    pred[:25] = 1 - pred[:25]  # questions 0-4 get every option wrong
    m = compute_metrics("superglue/multirc", pred, REF2, groups=groups)
    assert m["f1a"] == pytest.approx(f1_score(REF2, pred))
    assert m["exact_match"] == pytest.approx(35 / 40)
    with pytest.raises(ValueError, match="needs the group of each example"):
        compute_metrics("superglue/multirc", pred, REF2)  # exact_match cannot be computed


def test_record_max_over_gold_answers():
    preds = ["the Eiffel Tower", "Paris", "Barack Obama"]
    golds = [["Eiffel Tower", "tower"], ["London"], ["Obama", "President Obama"]]
    m = compute_metrics("superglue/record", preds, golds)
    # 1: EM after normalisation; 2: nothing shared; 3: F1 2/3 against "Obama", 1/2 against the other
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx((1 + 0 + 2 / 3) / 3)


def test_axg_gender_parity():
    pred, ref = np.array([0, 0, 1, 0, 1, 1]), np.array([0, 0, 0, 0, 1, 1])
    m = compute_metrics("superglue/axg", pred, ref, groups=[7, 7, 8, 8, 9, 9])
    assert m == {"accuracy": pytest.approx(5 / 6), "gender_parity": pytest.approx(2 / 3)}
    assert "gender_parity" not in compute_metrics("superglue/axg", pred, ref)


def test_score_from_examples(tmp_path):
    from kdlab.data import Example, score

    record = [
        Example("p", "q", 0, 0, choices=["Berlin", "Merkel"], answers=["Berlin"]),
        Example("p", "q", 1, 1, choices=["Berlin", "Merkel"], answers=["Merkel"]),
    ]
    assert score("superglue/record", [0, 0], record) == {"f1": 0.5, "exact_match": 0.5}
    multirc = [Example("p", "q a", lab, i, group=(0, i // 2)) for i, lab in enumerate([1, 0, 1, 1])]
    assert score("superglue/multirc", [1, 0, 1, 0], multirc)["exact_match"] == 0.5
