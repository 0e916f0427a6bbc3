"""The divergence library: ``get(name, **params)`` returns a ``torch.nn.Module``.

Each module of this folder is imported on first use (``kdlab.registry.discover``): a new
divergence is one file here, registered with ``@REGISTRY.register("name")``, plus its
option file ``kdlab/configs/divergence/<name>.yaml`` (see docs/extending.md).

Calling ``div(student_logits, teacher_logits, mask=None)`` returns a scalar tensor.
Logits are ``[..., C]``; ``mask`` (``[...]``, bool) excludes positions exactly.
"""

from __future__ import annotations

from typing import Any, List

import torch

from kdlab.registry import Registry, discover

REGISTRY: Registry = Registry("divergence")


def get(name: str, **params: Any) -> torch.nn.Module:
    """Build the divergence registered as ``name`` with ``params``."""
    return REGISTRY.build(name, **params)


def names() -> List[str]:
    return REGISTRY.names()


# Importing the modules registers them: every file of this folder, then the methods of the
# literature (kdlab/methods/, where AKL and ULD register as divergences).
discover(__name__)
discover("kdlab.methods")
