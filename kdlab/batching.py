"""Turning task examples into padded model batches (encoder family), and pairing two
tokenisations of the same examples (teacher and student with different tokenizers)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch

from kdlab.data.encode import encode


class EncodedDataset(torch.utils.data.Dataset):
    """Tokenised examples; batches are padded dynamically to their longest member.

    Each item carries its ``index`` in the dataset, so cached teacher outputs can be
    looked up for a shuffled batch.
    """

    def __init__(self, tokenizer: Any, examples: Sequence[Any], max_length: int, regression: bool,
                 cache_dir: Optional[str] = None, truncation: str = "longest_first"):
        features = encode(examples, tokenizer, max_length, truncation=truncation, cache_dir=cache_dir)
        self.features: List[Dict[str, Any]] = [
            {k: features[k][i] for k in features} for i in range(len(examples))
        ]
        dtype = torch.float32 if regression else torch.long
        self.labels = torch.tensor([ex.label for ex in examples], dtype=dtype)
        self.examples = list(examples)  # scored by kdlab.data.score (MultiRC groups, AX-g pairs)
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {**self.features[i], "labels": self.labels[i], "index": i}

    def collate(self, rows: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        labels = torch.stack([r.pop("labels") for r in rows])
        index = torch.tensor([r.pop("index") for r in rows])
        batch = self.tokenizer.pad(rows, return_tensors="pt")
        return {**batch, "labels": labels, "index": index}


class WithTransfer(torch.utils.data.Dataset):
    """Labelled examples followed by transfer examples (no gold label), one dataset.

    Both parts are datasets of one family built with one tokenizer; items and batches are
    theirs, with ``index`` counted over the whole and ``has_label`` ``[B]`` bool added:
    False for transfer examples, whatever their ``labels`` hold. Cross-entropy and
    label-based terms read only the rows where it is True.
    """

    def __init__(self, labelled: Any, transfer: Any) -> None:
        self.parts = (labelled, transfer)
        self.n_labelled = len(labelled)
        self.labels = torch.cat([torch.as_tensor(labelled.labels), torch.as_tensor(transfer.labels)])
        self.examples = list(labelled.examples) + list(transfer.examples)

    def __len__(self) -> int:
        return self.n_labelled + len(self.parts[1])

    def __getitem__(self, i: int) -> Dict[str, Any]:
        labelled = i < self.n_labelled
        item = self.parts[0][i] if labelled else self.parts[1][i - self.n_labelled]
        return {**item, "index": i, "has_label": labelled}

    def collate(self, rows: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        has_label = torch.tensor([r.pop("has_label") for r in rows], dtype=torch.bool)
        return {**self.parts[0].collate(rows), "has_label": has_label}


TEACHER_PREFIX = "teacher."


class PairedDataset(torch.utils.data.Dataset):
    """The same examples tokenised for the student and for the teacher.

    Batches are the student's, plus the teacher's tensors under ``teacher.<key>``
    (``teacher_batch`` takes them back out): each model reads its own tokenisation of the
    same examples, in the same order. ``labels`` and ``examples`` are the student's.
    """

    def __init__(self, student: Any, teacher: Any) -> None:
        if len(student) != len(teacher):
            raise ValueError(f"paired datasets differ in length: student {len(student)}, teacher {len(teacher)}")
        self.student, self.teacher = student, teacher
        self.labels = student.labels
        self.examples = student.examples

    def __len__(self) -> int:
        return len(self.student)

    def __getitem__(self, i: int) -> tuple:
        return self.student[i], self.teacher[i]

    def collate(self, rows: List[tuple]) -> Dict[str, torch.Tensor]:
        batch = self.student.collate([s for s, _ in rows])
        teacher = self.teacher.collate([t for _, t in rows])
        return {**batch, **{TEACHER_PREFIX + k: v for k, v in teacher.items()}}


def teacher_batch(batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The teacher's inputs: its own tokenisation when the batch carries one, else the batch."""
    own = {k[len(TEACHER_PREFIX):]: v for k, v in batch.items() if k.startswith(TEACHER_PREFIX)}
    return own or batch


def loader(dataset: torch.utils.data.Dataset, batch_size: int, shuffle: bool = False,
           seed: int = 0) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=dataset.collate,
        generator=generator if shuffle else None,
    )
