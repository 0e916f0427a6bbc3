"""The interface every model family implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

Batch = Dict[str, torch.Tensor]


@dataclass
class Outputs:
    """What one forward pass gives the objective.

    ``logits``: ``[B, C]`` (classification) or ``[B, T, V]`` (token level).
    ``mask``: ``None``, or ``[B, T]`` bool marking the positions that are distilled and
    supervised (target tokens, answer tokens); everything else gets no loss.
    """

    logits: torch.Tensor
    mask: Optional[torch.Tensor] = None


class Family(ABC):
    name: str

    @abstractmethod
    def load(self, path: str, num_labels: int, key: str, reinit_head: bool = False) -> Any:
        """Load a checkpoint (local dir or hub id) as a ``kdlab.models.Loaded``."""

    @abstractmethod
    def from_config(self, config: Any) -> torch.nn.Module:
        """A randomly initialised model of this family from a transformers config."""

    @abstractmethod
    def dataset(self, tokenizer: Any, examples: Sequence[Any], task: Any, dataset_cfg: Any,
                cache_dir: Optional[str] = None) -> torch.utils.data.Dataset:
        """Tokenised examples (``dataset_cfg`` is the ``dataset`` config node: max_length,
        truncation, ...). Items carry their ``index``; the dataset has a ``collate`` method
        and a ``labels`` array (gold labels in the form ``compute_metrics`` expects)."""

    @abstractmethod
    def forward(self, model: torch.nn.Module, batch: Batch) -> Outputs:
        """Run ``model`` on a batch already on its device."""

    @abstractmethod
    def supervised_loss(self, out: Outputs, batch: Batch) -> torch.Tensor:
        """The loss on gold labels / targets (float32 scalar)."""

    @abstractmethod
    def predictions(self, model: torch.nn.Module, loader: Any, device: torch.device,
                    precision: str) -> np.ndarray:
        """Predictions in the form ``kdlab.data.compute_metrics`` expects."""
