"""Model builders: teachers and students, registered by name.

A builder returns a ``Loaded`` bundle: the model, its tokenizer, and a ``source`` string
that identifies the weights (used in cache keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


from kdlab.models import students, teachers, tiny  # noqa: E402,F401  (registration)
