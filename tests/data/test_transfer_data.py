"""Transfer data: the unlabelled split (disjoint, seeded), augmentation (seeded rules),
transfer files (formats and errors) and the config-time refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdlab.config import AugmentConfig
from kdlab.data import NO_LABEL, Example, load_split
from kdlab.data import transfer as tr
from kdlab.data.augment import augment, perturb
from kdlab.errors import ConfigError, DataError
from kdlab.objective import build_objective
from tests.conftest import compose_config, refused_before_training


@pytest.fixture
def sst2_dir(tmp_path: Path) -> Path:
    """A small SST-2 in the GLUE layout: 60 train rows."""
    d = tmp_path / "data" / "glue" / "SST-2"
    d.mkdir(parents=True)
    rows = [f"sentence number {i} is {'good' if i % 2 else 'bad'}\t{i % 2}" for i in range(60)]
    (d / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (d / "dev.tsv").write_text("sentence\tlabel\nfine\t1\n")
    return tmp_path / "data"


def config(data_dir: Path, *overrides: str):
    return compose_config(["output_dir=/tmp/x", f"dataset.data_dir={data_dir}", *overrides])


def unlabelled_rows(data_dir: Path, seed: int, teacher_n=None):
    cfg = config(data_dir, "transfer=unlabelled", "dataset.max_train_samples=10", "transfer.max_samples=20",
                 f"seed={seed}")
    labelled = load_split("glue/sst2", "train", data_dir=str(data_dir), max_samples=10, seed=seed)
    teacher = [] if teacher_n is None else load_split("glue/sst2", "train", data_dir=str(data_dir),
                                                      max_samples=teacher_n, seed=99)
    return labelled, teacher, tr.prepare(cfg, labelled, teacher)(None)


def test_unlabelled_rows_are_disjoint_from_labelled_and_teacher_rows_and_carry_no_label(sst2_dir):
    labelled, teacher, rows = unlabelled_rows(sst2_dir, seed=0, teacher_n=10)
    assert len(rows) == 20
    ids = {ex.idx for ex in rows}
    assert len(ids) == 20
    assert not ids & {ex.idx for ex in labelled}
    assert not ids & {ex.idx for ex in teacher}
    assert all(ex.label == NO_LABEL for ex in rows)


def test_unlabelled_rows_are_seeded(sst2_dir):
    _, _, a = unlabelled_rows(sst2_dir, seed=0)
    _, _, b = unlabelled_rows(sst2_dir, seed=0)
    _, _, c = unlabelled_rows(sst2_dir, seed=1)
    assert [ex.idx for ex in a] == [ex.idx for ex in b]
    assert [ex.idx for ex in a] != [ex.idx for ex in c]


def test_unlabelled_refuses_when_every_row_is_labelled(sst2_dir):
    cfg = config(sst2_dir, "transfer=unlabelled", "dataset.max_train_samples=60")
    labelled = load_split("glue/sst2", "train", data_dir=str(sst2_dir))
    with pytest.raises(ConfigError, match="every train row"):
        tr.prepare(cfg, labelled, [])


RULES = AugmentConfig(copies=3)
PAIRS = [Example("the cat sat on the mat today", "a cat was sitting somewhere", 1, 0),
         Example("nothing happened here at all", "something happened", 0, 1)]


def test_augmentation_is_seeded_and_unlabelled():
    a, b = augment(PAIRS, RULES, seed=0, mask_token="[MASK]"), augment(PAIRS, RULES, seed=0, mask_token="[MASK]")
    c = augment(PAIRS, RULES, seed=1, mask_token="[MASK]")
    assert len(a) == 6
    assert [(x.text_a, x.text_b) for x in a] == [(x.text_a, x.text_b) for x in b]
    assert [(x.text_a, x.text_b) for x in a] != [(x.text_a, x.text_b) for x in c]
    assert all(x.label == NO_LABEL for x in a)
    assert all(x.text_b is not None for x in a)  # both sentences of a pair are kept (and perturbed)
    assert augment(PAIRS, RULES, seed=0, mask_token="[MASK]", max_samples=4)[:4] == a[:4]


def test_each_rule_does_what_it_says():
    import random

    words = "one two three four five six seven eight"
    off = AugmentConfig(mask_prob=0, dropout_prob=0, swap_prob=0, ngram_prob=0)
    assert perturb(words, random.Random(0), off, "[M]") == words
    masked = perturb(words, random.Random(0), AugmentConfig(mask_prob=1, dropout_prob=0, swap_prob=0, ngram_prob=0), "[M]")
    assert masked == " ".join(["[M]"] * 8)
    dropped = perturb(words, random.Random(0), AugmentConfig(mask_prob=0, dropout_prob=1, swap_prob=0, ngram_prob=0), "[M]")
    assert len(dropped.split()) == 1 and dropped in words.split()  # one word is always kept
    swapped = perturb(words, random.Random(0), AugmentConfig(mask_prob=0, dropout_prob=0, swap_prob=1, ngram_prob=0), "[M]")
    assert swapped == "two one four three six five eight seven"
    gram = perturb(words, random.Random(0), AugmentConfig(mask_prob=0, dropout_prob=0, swap_prob=0, ngram_prob=1,
                                                          ngram_max=3), "[M]")
    assert 1 <= len(gram.split()) <= 3 and gram in words


def test_augment_refuses_tasks_whose_prompts_read_raw_fields(sst2_dir):
    cfg = config(sst2_dir, "transfer=augment")
    labelled = [Example("a", "b", 0, 0, fields={"word": "a"})]
    with pytest.raises(ConfigError, match="raw fields"):
        tr.prepare(cfg, labelled, [])


def test_transfer_files_in_each_format(sst2_dir, tmp_path):
    txt = tmp_path / "extra.txt"
    txt.write_text("first text\n\nsecond text\n")
    tsv = tmp_path / "extra.tsv"
    tsv.write_text("index\tsentence\n0\tthird text\n1\tfourth text\n")  # SST-2's test.tsv layout
    cfg = config(sst2_dir, "transfer=files", f"transfer.files=[{txt},{tsv}]")
    rows = tr.prepare(cfg, [], [])(None)
    assert [ex.text_a for ex in rows] == ["first text", "second text", "third text", "fourth text"]
    assert all(ex.label == NO_LABEL and ex.text_b is None for ex in rows)
    labelled_tsv = tmp_path / "labelled.tsv"
    labelled_tsv.write_text("sentence\tlabel\nfifth text\t1\n")  # a label column is ignored
    assert tr.read_file(tr.get_task("glue/sst2"), labelled_tsv)[0].label == NO_LABEL


def test_jsonl_transfer_file_of_a_superglue_task(tmp_path):
    path = tmp_path / "extra.jsonl"
    path.write_text(json.dumps({"premise": "It rained.", "hypothesis": "It was wet.", "idx": 0}) + "\n")
    (ex,) = tr.read_file(tr.get_task("superglue/cb"), path)
    assert (ex.text_a, ex.text_b, ex.label) == ("It rained.", "It was wet.", NO_LABEL)


@pytest.mark.parametrize("name, content, pattern", [
    ("missing.txt", None, r"missing.txt: no such file"),
    ("empty.txt", "\n \n", r"empty.txt: empty file"),
    ("binary.txt", b"fine\n\xff\xfe broken\n", r"binary.txt: line 2: not UTF-8"),
    ("wrong.tsv", "text\tlabel\nhello\t1\n", r"wrong.tsv: line 1: no column\(s\) sentence"),
    ("ragged.tsv", "sentence\nok\ntoo\tmany\n", r"ragged.tsv: line 3: 2 columns"),
    ("header.tsv", "sentence\n", r"header.tsv: no examples"),
])
def test_bad_transfer_files_name_the_file_and_line(tmp_path, name, content, pattern):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=pattern):
        tr.read_file(tr.get_task("glue/sst2"), path)


def test_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"premise": "a", "hypothesis": "b", "idx": 0}) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl: line 2: invalid JSON"):
        tr.read_file(tr.get_task("superglue/cb"), path)


@pytest.mark.parametrize("overrides, pattern", [
    (["dataset=glue/stsb", "transfer=unlabelled", "dataset.max_train_samples=10"], "regression task"),
    (["transfer=unlabelled"], r"dataset.max_train_samples=null"),
    (["transfer=unlabelled", "dataset.max_train_samples=10", "objective.alpha=0", "divergence=none"],
     "no weighted objective term learns from the teacher"),
    (["transfer=augment", "transfer.augment.mask_prob=1.5"], r"transfer.augment.mask_prob=1.5"),
    (["transfer=augment", "transfer.augment.copies=0"], r"transfer.augment.copies=0"),
    (["transfer=files"], "transfer=files needs transfer.files"),
    (["transfer=files", "transfer.files=[a.jsonl]"], r"a.jsonl: glue/sst2 reads .tsv or .txt"),
    (["dataset=glue/mrpc", "transfer=files", "transfer.files=[a.txt]"], r"glue/mrpc reads .tsv files"),
    (["transfer.files=[a.txt]"], "transfer=none"),
    (["transfer=unlabelled", "dataset.max_train_samples=10", "transfer.max_samples=0"], "transfer.max_samples=0"),
])
def test_config_refusals(overrides, pattern):
    cfg = compose_config(["output_dir=/tmp/x", *overrides])
    with pytest.raises(ConfigError, match=pattern):
        tr.check(cfg, build_objective(cfg))


def test_a_diagnostic_set_reads_transfer_files_in_its_train_task_format(tmp_path):
    cfg = compose_config(["output_dir=/tmp/x", "dataset=glue/ax", "transfer=files", "transfer.files=[a.tsv]"])
    tr.check(cfg, build_objective(cfg))
    path = tmp_path / "a.tsv"
    path.write_text("sentence1\tsentence2\nA man sleeps.\tNobody sleeps.\n")  # MNLI's columns
    (ex,) = tr.read_file(tr.get_task("glue/ax"), path)
    assert (ex.text_a, ex.text_b, ex.label) == ("A man sleeps.", "Nobody sleeps.", NO_LABEL)


def test_label_terms_alone_are_refused_with_transfer_data():
    cfg = compose_config(["output_dir=/tmp/x", "experiment=methods/cpu/pld", "transfer=unlabelled",
                          "dataset.max_train_samples=10"])
    with pytest.raises(ConfigError, match="no weighted objective term"):
        tr.check(cfg, build_objective(cfg))


def test_a_missing_transfer_file_stops_the_cli_before_any_model(tmp_path, data_dir):
    stderr = refused_before_training(["experiment=smoke", "transfer=files", f"transfer.files=[{tmp_path / 'nope.txt'}]"],
                                     tmp_path, data_dir)
    (line,) = [ln for ln in stderr.splitlines() if ln.startswith("kdlab: error:")]
    assert "nope.txt: no such file" in line
