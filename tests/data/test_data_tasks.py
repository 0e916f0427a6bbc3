"""Task specs: names, label orders, splits."""

from __future__ import annotations

import pytest

from kdlab.data import TASKS, get_task
from kdlab.errors import ConfigError


def test_unknown_task_lists_the_valid_names():
    with pytest.raises(ConfigError, match="glue/sst2") as e:
        get_task("glue/sst3")
    assert "Did you mean 'glue/sst2'" in str(e.value)


def test_contract_fields():
    sst2 = get_task("glue/sst2")
    assert (sst2.name, sst2.num_labels, sst2.is_regression) == ("glue/sst2", 2, False)
    assert sst2.label_names == ("negative", "positive")
    assert sst2.metric == "accuracy" and sst2.eval_splits == ("validation",)
    stsb = get_task("glue/stsb")
    assert (stsb.num_labels, stsb.is_regression, stsb.label_names, stsb.metric) == (
        1,
        True,
        (),
        "spearmanr",
    )
    mnli = get_task("glue/mnli")
    assert mnli.eval_splits == ("validation_matched", "validation_mismatched")
    assert mnli.label_names == ("entailment", "neutral", "contradiction")
    assert get_task("glue/rte").label_names == ("entailment", "not_entailment")
    assert get_task("glue/cola").metric == "matthews_correlation"
    assert get_task("glue/mrpc").metric == "f1"


def test_unknown_split_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="validation_matched"):
        get_task("glue/mnli").split_file("validation")


def test_every_glue_task_is_registered():
    for t in ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "ax"]:
        assert f"glue/{t}" in TASKS
