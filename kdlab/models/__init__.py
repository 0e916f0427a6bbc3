"""Model builders: teachers and students, registered by name.

A builder returns a ``Loaded`` bundle: the model, its tokenizer, and a ``source`` string
that identifies the weights (used in cache keys). The model carries its tokenizer's size
(``carry_tokenizer_size``), set once where model and tokenizer are put together: a token
family slices the model's logits to it, without recording anything about models itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from kdlab.registry import Registry

TEACHERS: Registry = Registry("teacher")
STUDENTS: Registry = Registry("student")


@dataclass
class Loaded:
    model: torch.nn.Module
    tokenizer: Any
    source: str  # identity of the weights: a path, hub id or derivation
    has_task_head: bool = True  # False: the head is freshly initialised and must be trained


# The attribute of a model holding its tokenizer's size (an embedding may be padded
# beyond it, to a multiple of 8/64 rows).
TOKENIZER_SIZE_ATTR = "kdlab_tokenizer_size"


def carry_tokenizer_size(model: torch.nn.Module, size: int) -> torch.nn.Module:
    """Record ``size``, the number of tokens of ``model``'s tokenizer (``len(tokenizer)``),
    on ``model`` (returned): each model then tells its own vocabulary, whichever family
    instance, run or teacher it serves. A copy of the model (``copy.deepcopy``) carries it
    too."""
    setattr(model, TOKENIZER_SIZE_ATTR, int(size))
    return model


def tokenizer_size(model: torch.nn.Module) -> Optional[int]:
    """The tokenizer size ``model`` carries (through a DDP wrapper's ``.module``; a
    compiled module forwards attributes to the original), ``None`` if it carries none."""
    return getattr(getattr(model, "module", model), TOKENIZER_SIZE_ATTR, None)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


from kdlab.models import students, teachers, tiny  # noqa: E402,F401  (registration)
