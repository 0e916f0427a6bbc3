"""The real files: every split loads with its official size and the hub's label ids."""

from __future__ import annotations

import pytest

from kdlab.data import get_task, load_split
from kdlab.data.sources import original_file

# (task, split, official rows, label counts in the hub's label order, or None)
OFFICIAL = [
    ("glue/cola", "train", 8551, {0: 2528, 1: 6023}),
    ("glue/cola", "validation", 1043, {0: 322, 1: 721}),
    ("glue/sst2", "train", 67349, {0: 29780, 1: 37569}),
    ("glue/sst2", "validation", 872, {0: 428, 1: 444}),
    ("glue/mrpc", "train", 3668, {0: 1194, 1: 2474}),
    ("glue/mrpc", "validation", 408, {0: 129, 1: 279}),
    ("glue/stsb", "train", 5749, None),
    ("glue/stsb", "validation", 1500, None),
    ("glue/rte", "train", 2490, {0: 1249, 1: 1241}),
    ("glue/rte", "validation", 277, {0: 146, 1: 131}),
    ("superglue/boolq", "validation", 3270, {0: 1237, 1: 2033}),
    ("superglue/cb", "train", 250, {0: 115, 1: 119, 2: 16}),
    ("superglue/cb", "validation", 56, {0: 23, 1: 28, 2: 5}),
    ("superglue/copa", "train", 400, {0: 195, 1: 205}),
    ("superglue/copa", "validation", 100, {0: 55, 1: 45}),
]


@pytest.mark.parametrize(
    "task,split,rows,counts", OFFICIAL, ids=[f"{t}:{s}" for t, s, _, _ in OFFICIAL]
)
def test_official_sizes_and_labels(real_dir, need, task, split, rows, counts):
    spec = get_task(task)
    need(real_dir, str(original_file(spec, split, real_dir).relative_to(real_dir)))
    examples = load_split(task, split, data_dir=str(real_dir))
    assert len(examples) == rows
    assert [ex.idx for ex in examples[:3]] == [0, 1, 2]
    assert all(ex.text_a for ex in examples)
    if counts is not None:
        got = {}
        for ex in examples:
            got[ex.label] = got.get(ex.label, 0) + 1
        assert got == counts


def test_first_rows_match_the_files(real_dir, need):
    need(real_dir, "glue/RTE/dev.tsv")
    rte = load_split("glue/rte", "validation", data_dir=str(real_dir))[0]
    assert rte.text_b == "Christopher Reeve had an accident."
    assert rte.label == 1  # not_entailment, as in the hub's glue/rte
    need(real_dir, "glue/MRPC/dev.tsv")
    mrpc = load_split("glue/mrpc", "validation", data_dir=str(real_dir))[0]
    assert mrpc.text_a.startswith("He said the foodservice")  # no byte-order mark
    assert mrpc.text_b.startswith('"The foodservice')  # quotes are text, not quoting
    need(real_dir, "glue/STS-B/dev.tsv")
    stsb = load_split("glue/stsb", "validation", data_dir=str(real_dir))
    assert stsb[1].label == pytest.approx(4.75)
    assert all(0.0 <= ex.label <= 5.0 for ex in stsb)


def test_subsampling_is_seeded_and_stratified(real_dir, need):
    need(real_dir, "glue/SST-2/train.tsv")
    a = load_split("glue/sst2", "validation", str(real_dir), max_samples=100, seed=3)
    b = load_split("glue/sst2", "validation", str(real_dir), max_samples=100, seed=3)
    c = load_split("glue/sst2", "validation", str(real_dir), max_samples=100, seed=4)
    assert [e.idx for e in a] == [e.idx for e in b] != [e.idx for e in c]
    assert [e.idx for e in a] == sorted(e.idx for e in a)  # file order kept
    s = load_split("glue/cola", "validation", str(real_dir), max_samples=100, stratified=True)
    # 322 / 1043 unacceptable -> 30.9 -> 31 of 100
    assert sum(1 for e in s if e.label == 0) == 31
    assert len(s) == 100
