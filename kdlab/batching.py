"""Turning task examples into padded model batches (encoder family)."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch


class EncodedDataset(torch.utils.data.Dataset):
    """Tokenised examples; batches are padded dynamically to their longest member."""

    def __init__(self, tokenizer: Any, examples: Sequence[Any], max_length: int, regression: bool):
        texts_a = [ex.text_a for ex in examples]
        pairs = [ex.text_b for ex in examples]
        if any(p is not None for p in pairs):
            enc = tokenizer(texts_a, [p or "" for p in pairs], truncation=True, max_length=max_length)
        else:
            enc = tokenizer(texts_a, truncation=True, max_length=max_length)
        self.features: List[Dict[str, Any]] = [
            {k: enc[k][i] for k in enc.keys()} for i in range(len(examples))
        ]
        dtype = torch.float32 if regression else torch.long
        self.labels = torch.tensor([ex.label for ex in examples], dtype=dtype)
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {**self.features[i], "labels": self.labels[i]}

    def collate(self, rows: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        labels = torch.stack([r.pop("labels") for r in rows])
        batch = self.tokenizer.pad(rows, return_tensors="pt")
        return {**batch, "labels": labels}


def loader(
    dataset: EncodedDataset, batch_size: int, shuffle: bool, seed: int = 0
) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=dataset.collate,
        generator=generator if shuffle else None,
    )
