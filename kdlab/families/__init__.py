"""Model families: how a family's models are loaded, fed, scored and distilled.

The trainer and runner speak only to a ``Family``; the encoder (classification heads,
``[B, C]`` logits), encoder-decoder and decoder-only families (``[B, T, V]`` logits with
a mask over the distilled tokens) plug in here, so the same ``teacher`` / ``student`` /
``divergence`` / ``dataset`` groups drive all three.
"""

from __future__ import annotations

from kdlab.families.base import Family, Outputs
from kdlab.registry import Registry

FAMILIES: Registry = Registry("family")


def get_family(name: str) -> Family:
    return FAMILIES.get(name)()


from kdlab.families import causal, encoder, seq2seq  # noqa: E402,F401  (registration)

__all__ = ["FAMILIES", "Family", "Outputs", "get_family"]
