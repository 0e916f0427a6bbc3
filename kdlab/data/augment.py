"""Augmented transfer examples: seeded, resource-free copies of labelled inputs.

Tang et al. (2019, "Distilling Task-Specific Knowledge from BERT into Simple Neural
Networks", section 3.3) enlarge a small labelled set with perturbed copies that only the
teacher labels: masking words and sampling n-grams (their POS-guided word replacement
needs a tagger and is left out). Each text of an example (both sentences of a pair) is
split on whitespace and goes through, in order:

1. masking: each word, with probability ``mask_prob``, becomes ``mask_token`` (the
   teacher tokenizer's mask token, or its unknown token when it has none);
2. word dropout: each word, with probability ``dropout_prob``, is deleted (at least one
   word is kept);
3. local shuffle: left to right, each adjacent pair swaps with probability ``swap_prob``
   (a word moves at most a few places, as in Lample et al. 2018's noise model);
4. n-gram sampling: with probability ``ngram_prob`` the text becomes one of its n-grams,
   ``n`` uniform in ``1..ngram_max``, the start uniform.

Copy ``c`` of the example at position ``i`` of the labelled list draws from its own
generator seeded by ``(seed, i, c)``: the same seed gives the same copies whatever else
ran, another seed other copies. The copies carry no label.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any, List, Optional, Sequence

from kdlab.data.examples import NO_LABEL, Example
from kdlab.errors import ConfigError

PROBS = ("mask_prob", "dropout_prob", "swap_prob", "ngram_prob")


def check(cfg: Any) -> None:
    """Reject rule settings that mean nothing: probabilities outside [0, 1], no copies."""
    for key in PROBS:
        value = getattr(cfg, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"transfer.augment.{key}={value}: must be a probability in [0, 1]")
    if cfg.copies < 1:
        raise ConfigError(f"transfer.augment.copies={cfg.copies}: must be >= 1")
    if cfg.ngram_max < 1:
        raise ConfigError(f"transfer.augment.ngram_max={cfg.ngram_max}: must be >= 1")


def perturb(text: str, rng: random.Random, cfg: Any, mask_token: str) -> str:
    """One perturbed copy of ``text`` (rules 1-4 above)."""
    words = text.split()
    if not words:
        return text
    words = [mask_token if rng.random() < cfg.mask_prob else w for w in words]
    kept = [w for w in words if rng.random() >= cfg.dropout_prob]
    words = kept or [words[rng.randrange(len(words))]]
    i = 0
    while i < len(words) - 1:
        if rng.random() < cfg.swap_prob:
            words[i], words[i + 1] = words[i + 1], words[i]
            i += 2  # a swapped word does not move again in this pass
        else:
            i += 1
    if rng.random() < cfg.ngram_prob:
        n = min(rng.randint(1, cfg.ngram_max), len(words))
        start = rng.randrange(len(words) - n + 1)
        words = words[start:start + n]
    return " ".join(words)


def augment(examples: Sequence[Example], cfg: Any, seed: int, mask_token: str,
            max_samples: Optional[int] = None) -> List[Example]:
    """``cfg.copies`` perturbed, unlabelled copies of each example (copy-major order, so a
    ``max_samples`` cap keeps whole rounds of copies of every example first)."""
    out: List[Example] = []
    for c in range(cfg.copies):
        for i, ex in enumerate(examples):
            rng = random.Random(f"{seed}:{i}:{c}")  # str seeds hash deterministically (sha512)
            text_a = perturb(ex.text_a, rng, cfg, mask_token)
            text_b = None if ex.text_b is None else perturb(ex.text_b, rng, cfg, mask_token)
            out.append(replace(ex, text_a=text_a, text_b=text_b, label=NO_LABEL))
            if max_samples is not None and len(out) >= max_samples:
                return out
    return out
