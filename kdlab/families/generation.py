"""Answers sampled from the student, for on-policy distillation (``kdlab.on_policy``).

What the seq2seq and causal families share when a batch's answers are replaced by the
student's own: which rows are generated (a seeded draw, so runs reproduce and resume),
sampling under ``torch.no_grad`` in eval mode (dropout off, the mode restored after), and
cutting each sampled row after its first EOS. Each family rebuilds its batch around the
new answers with the collation code it already has (``generated_batch``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, List, Optional

import torch


@dataclass(frozen=True)
class Sampling:
    """How the student samples an answer: ``temperature``, nucleus ``top_p`` (no top-k cut),
    at most ``max_new_tokens`` tokens; ``eos_id`` / ``pad_id`` of the student's tokenizer."""

    temperature: float
    top_p: float
    max_new_tokens: int
    eos_id: int
    pad_id: int


def draw_seed(seed: int, counter: int) -> int:
    """A generator seed for ``(seed, counter)``: a digest, since the CPU generator keeps only the
    low 32 bits of its seed (``seed * 2**32 + counter`` would drop the run's seed)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{counter}".encode()).digest()[:4], "little")


def select_rows(n: int, fraction: float, seed: int, counter: int) -> torch.Tensor:
    """``[n]`` bool: the rows of micro-batch number ``counter`` whose answers are generated.

    ``floor(fraction * n)`` rows, plus one more with probability ``fraction * n - floor(.)``
    (so the expected share is ``fraction`` even for small batches), chosen uniformly; drawn
    from a private generator seeded by ``(seed, counter)``: the same run draws the same rows,
    before or after a resume, whatever else used the global RNG. ``fraction`` 0: none, 1: all.
    """
    g = torch.Generator().manual_seed(draw_seed(seed, counter))
    exact = fraction * n
    k = int(exact)
    if torch.rand((), generator=g).item() < exact - k:
        k += 1
    rows = torch.zeros(n, dtype=torch.bool)
    rows[torch.randperm(n, generator=g)[:k]] = True
    return rows


def cut_at_eos(sequences: torch.Tensor, eos_id: int) -> List[List[int]]:
    """Each row of ``sequences [N, L]`` (generated tokens only) up to and including its first
    EOS; what follows (padding the sampler added after a row finished) is dropped."""
    out = []
    for row in sequences.tolist():
        out.append(row[:row.index(eos_id) + 1] if eos_id in row else row)
    return out


def sample(model: torch.nn.Module, sampling: Sampling, vocab: Optional[int], **inputs: Any) -> torch.Tensor:
    """``model.generate(**inputs)`` with ``sampling``'s settings, under ``no_grad`` and in eval
    mode (no dropout in the answers the teacher scores); the model's mode is restored after.
    ``vocab``: the tokenizer's size; the rows an embedding is padded with beyond it are never
    sampled (they are no token). Returns the ids ``generate`` gives (prompt included for a
    decoder-only model)."""
    inner = getattr(model, "module", model)  # DDP
    size = inner.get_output_embeddings().weight.shape[0]
    padding_rows = list(range(vocab, size)) if vocab is not None and vocab < size else None
    training = inner.training
    inner.eval()
    try:
        with torch.no_grad():
            return inner.generate(**inputs, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                                  top_k=0, num_beams=1, max_new_tokens=sampling.max_new_tokens,
                                  eos_token_id=sampling.eos_id, pad_token_id=sampling.pad_id,
                                  suppress_tokens=padding_rows)
    finally:
        inner.train(training)
