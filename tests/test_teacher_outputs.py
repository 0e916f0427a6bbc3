"""The teacher-output cache: rows equal the live teacher's, looked up by example index in a
shuffled batch; written once, atomically; keyed by everything that changes the outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlab import teacher_outputs
from kdlab.families import get_family
from tests.methods.test_feature_methods import bert

FAMILY = get_family("encoder")


class Ragged(torch.utils.data.Dataset):
    """Token rows of different lengths, padded per batch like ``EncodedDataset``."""

    def __init__(self, n=13):
        g = torch.Generator().manual_seed(0)
        self.rows = [torch.randint(3, 40, (int(k),), generator=g).tolist()
                     for k in torch.randint(2, 9, (n,), generator=g)]
        self.labels = torch.zeros(n, dtype=torch.long)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"input_ids": self.rows[i], "labels": self.labels[i], "index": i}

    def collate(self, rows):
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[j, :len(r["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.stack([r["labels"] for r in rows]),
                "index": torch.tensor([r["index"] for r in rows])}


def test_cached_rows_equal_the_live_teacher_in_a_shuffled_batch(tmp_path):
    teacher, ds = bert(2).float().eval(), Ragged()
    logits = teacher_outputs.cached(tmp_path / "t.npy", lambda: teacher_outputs.compute(
        teacher, ds, FAMILY, torch.device("cpu"), "fp32", batch_size=4))
    assert logits.shape == (13, 2)
    cached = teacher_outputs.CachedTeacher(logits)
    live = teacher_outputs.LiveTeacher(teacher, FAMILY, torch.device("cpu"), "fp32")
    batch = ds.collate([ds[i] for i in (7, 0, 12, 3, 5)])
    torch.testing.assert_close(cached(batch).logits, live(batch).logits, rtol=1e-5, atol=1e-5)
    for i in range(len(ds)):  # every row, each on its own (no padding at all)
        one = ds.collate([ds[i]])
        torch.testing.assert_close(torch.from_numpy(np.array(logits[i])), live(one).logits[0], rtol=1e-5,
                                   atol=1e-5)


def test_the_cache_is_computed_once_and_written_atomically(tmp_path):
    path = tmp_path / "sub" / "t.npy"
    first = teacher_outputs.cached(path, lambda: np.arange(6, dtype=np.float32).reshape(3, 2))

    def fail():
        raise AssertionError("recomputed")

    again = teacher_outputs.cached(path, fail)
    np.testing.assert_array_equal(first, again)
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.npy"]  # no temp file left


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_length_ordered_pass_returns_rows_in_dataset_order(batch_size):
    teacher, ds = bert(2).float().eval(), Ragged()
    ref = teacher_outputs.compute(teacher, ds, FAMILY, torch.device("cpu"), "fp32", batch_size=1)
    out = teacher_outputs.compute(teacher, ds, FAMILY, torch.device("cpu"), "fp32", batch_size=batch_size)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
