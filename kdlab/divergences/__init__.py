"""The divergence library: ``get(name, **params)`` returns a ``torch.nn.Module``.

Calling ``div(student_logits, teacher_logits, mask=None)`` returns a scalar tensor.
Logits are ``[..., C]``; ``mask`` (``[...]``, bool) excludes positions exactly.
"""

from __future__ import annotations

from typing import Any, List

import torch

from kdlab.registry import Registry

REGISTRY: Registry = Registry("divergence")


def get(name: str, **params: Any) -> torch.nn.Module:
    """Build the divergence registered as ``name`` with ``params``."""
    return REGISTRY.build(name, **params)


def names() -> List[str]:
    return REGISTRY.names()


# Importing the families registers them.
from kdlab.divergences import fdiv, kl, mse, sinkhorn  # noqa: E402,F401
from kdlab.methods import adaptive, universal  # noqa: E402,F401  (methods of the literature)
