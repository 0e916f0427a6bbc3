"""Shared inputs for the divergence tests."""

from __future__ import annotations

import torch


def logits(*shape: int, scale: float = 2.0, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale
