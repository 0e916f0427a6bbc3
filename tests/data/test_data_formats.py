"""Every task loads from original-format files and from copies saved by ``datasets``,
with the same examples whatever the source."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
from data_samples import BENCHMARK_TASKS, EXPECTED, SAMPLES

from kdlab.data import NO_LABEL, get_task, load_split


def write(root: Path, files: dict) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def test_every_task_has_samples():
    assert sorted(SAMPLES) == BENCHMARK_TASKS


@pytest.mark.parametrize("task", sorted(SAMPLES))
def test_original_files(tmp_path, task):
    root = write(tmp_path, SAMPLES[task])
    for split, labels in EXPECTED[task].items():
        examples = load_split(task, split, data_dir=str(root))
        assert [ex.label for ex in examples] == pytest.approx(labels), split
        assert all(isinstance(ex.text_a, str) and ex.text_a for ex in examples)
        if get_task(task).kind != "regression":
            assert all(isinstance(ex.label, int) for ex in examples)


SAVERS = {
    "dataset_dict": lambda ds, d, split: datasets.DatasetDict({split: ds}).save_to_disk(str(d)),
    "dataset": lambda ds, d, split: ds.save_to_disk(str(d / split)),
    "parquet": lambda ds, d, split: ds.to_parquet(str(d / f"{split}-00000-of-00001.parquet")),
    "arrow": lambda ds, d, split: _arrow(ds, d / f"{split}.arrow"),
}


def _arrow(ds: datasets.Dataset, path: Path) -> None:
    import pyarrow as pa

    table = ds.data.table
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


@pytest.mark.parametrize("kind", sorted(SAVERS))
@pytest.mark.parametrize("task", sorted(SAMPLES))
def test_saved_copy_gives_the_same_examples(tmp_path, task, kind):
    spec = get_task(task)
    original = write(tmp_path / "orig", SAMPLES[task])
    split = next(iter(EXPECTED[task]))
    # rows in the hub's schema, as the original reader produces them
    path = original / spec.benchmark / spec.dirname / spec.split_file(split).filename
    rows = spec.split_file(split).format.read(path, spec.labels(split))
    # saved under the hub config name for one half of the tasks, the original dir for the other
    name = spec.hub_config if len(task) % 2 else spec.dirname
    saved = tmp_path / "saved" / spec.benchmark / name
    saved.mkdir(parents=True)
    SAVERS[kind](datasets.Dataset.from_list(rows), saved, split)
    want = load_split(task, split, data_dir=str(original))
    got = load_split(task, split, data_dir=str(tmp_path / "saved"))
    assert got == want


def test_hub_schema_with_class_labels(tmp_path, real_dir, need):
    """A copy with the hub's features (ClassLabel) gives the label ids of the TSV."""
    need(real_dir, "glue/RTE/dev.tsv")
    tsv = load_split("glue/rte", "validation", data_dir=str(real_dir))
    features = datasets.Features(
        {
            "sentence1": datasets.Value("string"),
            "sentence2": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["entailment", "not_entailment"]),
            "idx": datasets.Value("int32"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "sentence1": [e.text_a for e in tsv],
            "sentence2": [e.text_b for e in tsv],
            "label": [get_task("glue/rte").label_names[e.label] for e in tsv],
            "idx": [e.idx for e in tsv],
        },
        features=features,
    )
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "glue" / "rte"))
    assert load_split("glue/rte", "validation", data_dir=str(tmp_path)) == tsv


def test_multirc_groups_and_record_choices(tmp_path):
    root = write(tmp_path, {**SAMPLES["superglue/multirc"], **SAMPLES["superglue/record"]})
    multirc = load_split("superglue/multirc", "train", data_dir=str(root))
    assert [ex.group for ex in multirc] == [(0, 0), (0, 0), (0, 1), (0, 1), (0, 1)]
    assert multirc[2].text_b == "Who got the ball? Ann"
    record = load_split("superglue/record", "train", data_dir=str(root))
    assert record[0].choices == ["Berlin", "Merkel", "Obama"]
    assert record[0].answers == ["Merkel"]
    assert "@highlight" not in record[0].text_a and "- Merkel hosted Obama" in record[0].text_a
    assert record[1].idx == 71


def test_unlabelled_splits(tmp_path):
    root = write(tmp_path, SAMPLES["glue/mnli"])
    (ex,) = load_split("glue/mnli", "test_matched", data_dir=str(root))
    assert ex.label == NO_LABEL and not ex.has_label
