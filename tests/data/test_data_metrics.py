"""Every metric on hand-computed cases, degenerate inputs included (scikit-learn and SciPy
compute the scores; these tests pin the values and the conventions the project adds)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from kdlab.data import compute_metrics, get_task, task_names
from kdlab.data.metrics import normalize_answer, token_f1

rng = np.random.RandomState(0)
REF2, PRED2 = rng.randint(0, 2, 200), rng.randint(0, 2, 200)
REF3, PRED3 = rng.randint(0, 3, 200), rng.randint(0, 3, 200)


def test_cola_matthews_by_hand():
    # TP 2, TN 2, FP 1, FN 1: (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3
    m = compute_metrics("glue/cola", [1, 1, 0, 0, 0, 1], [1, 1, 1, 0, 0, 0])
    assert m == {"matthews_correlation": pytest.approx(1 / 3), "accuracy": pytest.approx(4 / 6)}


def test_three_class_matthews_for_the_diagnostic_by_hand():
    # Gorodkin's R_K: c=4 correct of s=6, true counts t=(2,2,2), predicted p=(2,3,1):
    # (c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (24 - 12) / sqrt(22 * 24)
    m = compute_metrics("glue/ax", [0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2])
    assert m["matthews_correlation"] == pytest.approx(12 / math.sqrt(22 * 24))
    assert m["accuracy"] == pytest.approx(4 / 6)


@pytest.mark.parametrize("task", ["glue/mrpc", "glue/qqp"])
def test_f1_of_the_positive_class_by_hand(task):
    # TP 2, FP 1, FN 1: 2TP / (2TP + FP + FN) = 4/6
    m = compute_metrics(task, [1, 1, 0, 1, 0], [1, 1, 1, 0, 0])
    assert m == {"f1": pytest.approx(2 / 3), "accuracy": pytest.approx(3 / 5)}


def test_cb_macro_f1_by_hand():
    # per class: 0 -> 2/3, 1 -> 2/4, 2 -> 0 (never predicted); unweighted mean 7/18
    m = compute_metrics("superglue/cb", [0, 1, 1, 1], [0, 0, 1, 2])
    assert m == {"f1_macro": pytest.approx(7 / 18), "accuracy": pytest.approx(2 / 4)}


def test_stsb_correlations_by_hand():
    # Pearson: x = (-1, 0, 1), y = (-4/3, -1/3, 5/3): 3 / sqrt(2 * 42/9)
    m = compute_metrics("glue/stsb", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert m["pearson"] == pytest.approx(9 / math.sqrt(84))
    assert m["spearmanr"] == pytest.approx(1.0)
    # ties share their mean rank: ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4) give 3 / sqrt(10)
    m = compute_metrics("glue/stsb", [1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 4.0])
    assert m["spearmanr"] == pytest.approx(3 / math.sqrt(10))


def test_axb_matthews_by_hand():
    m = compute_metrics("superglue/axb", [0, 0, 1, 1], [0, 1, 1, 1])
    # TP 2 (label 1), TN 1, FP 0, FN 1: (2 - 0) / sqrt(2 * 3 * 1 * 2)
    assert m["matthews_correlation"] == pytest.approx(2 / math.sqrt(12))


@pytest.mark.parametrize("task", ["glue/sst2", "glue/rte", "glue/qnli", "glue/wnli", "glue/mnli"])
def test_accuracy(task):
    n = get_task(task).num_labels
    ref, pred = REF3 % n, PRED3 % n
    assert compute_metrics(task, pred, ref) == {"accuracy": pytest.approx(np.mean(ref == pred))}


def test_degenerate_cases_have_defined_values():
    const = np.zeros(10, dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN, no library warning
        assert compute_metrics("glue/cola", const, REF2[:10])["matthews_correlation"] == 0.0
        assert compute_metrics("glue/cola", REF2[:10], const)["matthews_correlation"] == 0.0
        assert compute_metrics("glue/cola", const, const)["matthews_correlation"] == 0.0  # one class
        assert compute_metrics("glue/mrpc", const, const)["f1"] == 0.0  # nothing to find, nothing found
        # a collapsed regressor (constant predictions), constant references, one example
        for pred, ref in (([2.0] * 4, [0.0, 1.0, 2.0, 3.0]), ([0.0, 1.0, 2.0], [3.0] * 3), ([1.0], [2.0])):
            assert compute_metrics("glue/stsb", pred, ref) == {"pearson": 0.0, "spearmanr": 0.0}


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


def test_multirc_f1a_and_exact_match_by_hand():
    # questions (0,0): options 1,0 all right; (0,1): 1,1,0 one wrong; (1,0): 0 wrong
    ref = [1, 0, 1, 1, 0, 0]
    pred = [1, 0, 1, 0, 0, 1]
    groups = [(0, 0), (0, 0), (0, 1), (0, 1), (0, 1), (1, 0)]
    m = compute_metrics("superglue/multirc", pred, ref, groups=groups)
    # F1a over all options: TP 2, FP 1, FN 1
    assert m == {"f1a": pytest.approx(2 / 3), "exact_match": pytest.approx(1 / 3)}
    with pytest.raises(ValueError, match="needs the group of each example"):
        compute_metrics("superglue/multirc", pred, ref)  # exact_match cannot be computed


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
