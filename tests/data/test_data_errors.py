"""Missing and malformed data fail loudly, naming the file, the line and the expected form."""

from __future__ import annotations

import logging

import pytest

from kdlab.data import load_split
from kdlab.errors import ConfigError, DataError

SST2_HEADER = ["sentence", "label"]


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*glue/SST-2/train\.tsv"):
        load_split("glue/sst2", "train", data_dir=str(tmp_path / "nope"))


def test_missing_file_names_the_expected_layout(tmp_path):
    (tmp_path / "glue").mkdir()
    with pytest.raises(DataError) as e:
        load_split("glue/mnli", "validation_matched", data_dir=str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "glue" / "MNLI" / "dev_matched.tsv") in msg
    assert "GLUE TSV as distributed" in msg and "save_to_disk" in msg
    with pytest.raises(DataError, match=r"superglue/WiC/val\.jsonl.*SuperGLUE JSON lines"):
        load_split("superglue/wic", "validation", data_dir=str(tmp_path))


def test_wrong_column_count(tmp_path, write_tsv):
    path = write_tsv(
        tmp_path / "glue/SST-2/train.tsv", [SST2_HEADER, ["good", "1"], ["bad\textra", "0"]]
    )
    with pytest.raises(DataError) as e:
        load_split("glue/sst2", "train", data_dir=str(tmp_path))
    assert f"{path}: line 3: 3 columns, expected 2" in str(e.value)
    assert "header row naming the columns sentence, label" in str(e.value)


def test_unknown_label(tmp_path, write_tsv):
    write_tsv(
        tmp_path / "glue/RTE/dev.tsv",
        [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "entails"]],
    )
    with pytest.raises(
        DataError,
        match=r"dev\.tsv: line 2: unknown label 'entails' \(expected one of 'entailment', 'not_entailment'\)",
    ):
        load_split("glue/rte", "validation", data_dir=str(tmp_path))


def test_headerless_cola_and_bad_score(tmp_path, write_tsv):
    write_tsv(tmp_path / "glue/CoLA/train.tsv", [["src", "1", "", "ok"], ["src", "1", "ok"]])
    with pytest.raises(
        DataError, match=r"line 2: 3 columns, expected 4.*without header, columns: source, label"
    ):
        load_split("glue/cola", "train", data_dir=str(tmp_path))
    stsb = [
        "index",
        "genre",
        "filename",
        "year",
        "old_index",
        "source1",
        "source2",
        "sentence1",
        "sentence2",
        "score",
    ]
    write_tsv(
        tmp_path / "glue/STS-B/dev.tsv",
        [stsb, ["0", "g", "f", "y", "o", "s", "s", "a", "b", "high"]],
    )
    with pytest.raises(DataError, match="line 2: label 'high' is not a number"):
        load_split("glue/stsb", "validation", data_dir=str(tmp_path))


def test_missing_column_in_header(tmp_path, write_tsv):
    write_tsv(
        tmp_path / "glue/QNLI/train.tsv",
        [["index", "question", "text", "label"], ["0", "q", "s", "entailment"]],
    )
    with pytest.raises(DataError, match=r"line 1: no column\(s\) sentence"):
        load_split("glue/qnli", "train", data_dir=str(tmp_path))


def test_skip_reports_how_many_rows_it_dropped(tmp_path, write_tsv, caplog):
    write_tsv(
        tmp_path / "glue/SST-2/train.tsv",
        [SST2_HEADER, ["good", "1"], ["bad", "2"], ["x\ty", "0"], ["fine", "0"]],
    )
    with caplog.at_level(logging.WARNING):
        examples = load_split("glue/sst2", "train", data_dir=str(tmp_path), on_bad_row="skip")
    assert [e.text_a for e in examples] == ["good", "fine"]
    assert [e.idx for e in examples] == [0, 3]  # positions in the file, as the hub counts them
    assert (
        "skipped 2 malformed row(s)" in caplog.text and "line 3: unknown label '2'" in caplog.text
    )


def test_jsonl_errors(tmp_path, write_jsonl):
    path = write_jsonl(
        tmp_path / "superglue/CB/train.jsonl",
        [{"premise": "p", "hypothesis": "h", "label": "neutral", "idx": 0}],
    )
    path.write_text(path.read_text() + "{not json}\n")
    with pytest.raises(DataError, match=r"train\.jsonl: line 2: invalid JSON"):
        load_split("superglue/cb", "train", data_dir=str(tmp_path))
    write_jsonl(path, [{"premise": "p", "label": "neutral", "idx": 0}])
    with pytest.raises(
        DataError,
        match=r"line 1: missing field 'hypothesis'\. Expected one JSON object per line with \"premise\"",
    ):
        load_split("superglue/cb", "train", data_dir=str(tmp_path))
    write_jsonl(path, [{"premise": "p", "hypothesis": "h", "idx": 0}])
    with pytest.raises(DataError, match="line 1: no label"):
        load_split("superglue/cb", "train", data_dir=str(tmp_path))
    write_jsonl(
        tmp_path / "superglue/BoolQ/val.jsonl",
        [{"question": "q", "passage": "p", "idx": 0, "label": "yes"}],
    )
    with pytest.raises(DataError, match="unknown label 'yes'"):
        load_split("superglue/boolq", "validation", data_dir=str(tmp_path))


def test_bad_settings(tmp_path):
    with pytest.raises(ConfigError, match="valid values: error, skip"):
        load_split("glue/sst2", "train", data_dir=str(tmp_path), on_bad_row="ignore")
    with pytest.raises(ConfigError, match="Valid splits: train, validation_matched"):
        load_split("glue/mnli", "validation", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="max_samples"):
        load_split("glue/sst2", "train", data_dir=str(tmp_path), max_samples=0)


def test_saved_dataset_dict_without_the_split(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"sentence": "a", "label": 0, "idx": 0}])
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "glue" / "sst2"))
    with pytest.raises(DataError, match="no split 'validation'"):
        load_split("glue/sst2", "validation", data_dir=str(tmp_path))
    ds = datasets.Dataset.from_list([{"sentence": "a", "label": 5, "idx": 0}])
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "glue" / "SST-2"))
    with pytest.raises(DataError, match=r"label 5; expected an id in 0\.\.1"):
        load_split("glue/sst2", "validation", data_dir=str(tmp_path))
