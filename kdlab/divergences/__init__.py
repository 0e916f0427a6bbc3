"""The divergence library: ``get(name, **params)`` returns a ``kdlab.terms.Term``.

Each module of this folder is imported on first use (``kdlab.registry.discover``): a new
divergence is one file here, registered with ``@REGISTRY.register("name")``, plus its
option file ``kdlab/configs/divergence/<name>.yaml`` (see docs/extending.md). ``REGISTRY``
is ``kdlab.terms.TERMS``, the one registry of every objective term; ``names()`` lists the
divergences among them (terms reading logits and masks only).

Calling ``div(student_logits, teacher_logits, mask=None)`` returns a scalar tensor.
Logits are ``[..., C]``; ``mask`` (``[...]``, bool) excludes positions exactly.
"""

from __future__ import annotations

from typing import Any, List

import torch

from kdlab.registry import discover
from kdlab.terms import DIVERGENCE_READS, TERMS, TermRegistry, names_reading

REGISTRY: TermRegistry = TERMS


def get(name: str, **params: Any) -> torch.nn.Module:
    """Build the term registered as ``name`` with ``params``."""
    return REGISTRY.build(name, **params)


def names() -> List[str]:
    """The divergences: registered terms that read the two models' logits (and masks) only."""
    return names_reading(DIVERGENCE_READS)


# Importing the modules registers them: every file of this folder, then the methods of the
# literature (kdlab/methods/, where AKL and ULD register as divergences).
discover(__name__)
discover("kdlab.methods")
