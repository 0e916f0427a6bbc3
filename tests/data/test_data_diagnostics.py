"""The diagnostic sets as the benchmarks define them: AX trains on MNLI, AX-b and AX-g on
RTE; each is scored on its own labelled file."""

from __future__ import annotations

import datasets
import pytest
from data_samples import write_samples

from kdlab.data import get_task, load_split, score
from kdlab.data.tasks import SplitFile, TaskSpec, register
from kdlab.errors import DataError


@pytest.mark.parametrize("task, trained_on, eval_split, metrics", [
    ("glue/ax", "glue/mnli", "validation", ("matthews_correlation", "accuracy")),
    ("superglue/axb", "superglue/rte", "test", ("matthews_correlation", "accuracy")),
    ("superglue/axg", "superglue/rte", "test", ("accuracy", "gender_parity")),
])  # fmt: skip
def test_trains_on_its_train_task_and_scores_on_its_file(tmp_path, task, trained_on, eval_split, metrics):
    spec = get_task(task)
    assert (spec.train_task, spec.train_split, spec.eval_splits, spec.metrics) == \
        (trained_on, "train", (eval_split,), metrics)
    assert spec.label_names == get_task(trained_on).label_names  # one label space
    root = write_samples(write_samples(tmp_path, task), trained_on)
    train = load_split(task, "train", data_dir=str(root), max_samples=2, seed=1)
    assert train == load_split(trained_on, "train", data_dir=str(root), max_samples=2, seed=1)
    evals = load_split(task, eval_split, data_dir=str(root))
    assert all(ex.has_label for ex in evals)
    assert set(score(task, [ex.label for ex in evals], evals)) == set(metrics)


def test_axg_gender_parity_from_its_pairs(tmp_path):
    evals = load_split("superglue/axg", "test", data_dir=str(write_samples(tmp_path, "superglue/axg")))
    assert [ex.group for ex in evals] == [551, 551]
    assert score("superglue/axg", [0, 1], evals) == {"accuracy": 0.5, "gender_parity": 0.0}


def test_missing_train_task_file_names_it(tmp_path):
    root = write_samples(tmp_path, "glue/ax")  # the diagnostic file only, no MNLI
    with pytest.raises(DataError, match=r"glue/ax is trained on glue/mnli: .*glue/MNLI/train\.tsv"):
        load_split("glue/ax", "train", data_dir=str(root))


def test_labelled_ax_is_not_asked_of_the_hub(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the hub was queried")

    monkeypatch.setattr(datasets, "load_dataset", no_network)
    with pytest.raises(DataError, match=r"not on the Hugging Face hub; set dataset.data_dir .*diagnostic-full\.tsv"):
        load_split("glue/ax", "validation", data_dir=None)


def test_a_diagnostic_must_share_its_train_task_labels():
    rte = get_task("superglue/rte")
    bad = TaskSpec(name="superglue/axb_bad", benchmark="superglue", dirname="X", hub_path="", hub_config="",
                   label_names=("yes", "no"), raw_labels=None, metric="accuracy", metrics=("accuracy",),
                   splits={"test": SplitFile("x.jsonl", rte.splits["validation"].format)},
                   eval_splits=("test",), to_example=rte.to_example, train_task="superglue/rte")
    with pytest.raises(AssertionError):
        register(bad)
