"""Tokenisation of examples for encoder models, cached on disk.

The cache key (``kdlab.cache_keys.tokenized``) is the fingerprint of the tokenizer (its
vocabulary and settings) together with the texts, ``max_length`` and the truncation
strategy, so a second run with the same inputs reads the token ids instead of
re-tokenising, and any change gives a new entry. Entries are ``.npz`` files of flat int32
arrays plus offsets.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from kdlab import cache_keys
from kdlab.choices import Truncation, values
from kdlab.data.examples import Example
from kdlab.errors import ConfigError

log = logging.getLogger(__name__)

TRUNCATION = values(Truncation)
Features = Dict[
    str, List[List[int]]
]  # input_ids, attention_mask (, token_type_ids): one list per example


def encode(
    examples: Sequence[Example],
    tokenizer: Any,
    max_length: int,
    truncation: str = "longest_first",
    cache_dir: Optional[str] = None,
) -> Features:
    """Token ids of the (pairs of) texts of ``examples``, unpadded.

    ``truncation``: ``longest_first`` trims the longer text of a pair token by token;
    ``only_first`` / ``only_second`` trim one text only (``only_second`` keeps a BoolQ
    question whole and cuts the passage). With ``cache_dir``, results are cached there.
    """
    if truncation not in TRUNCATION:
        raise ConfigError(f"truncation={truncation!r}; valid strategies: {', '.join(TRUNCATION)}")
    texts_a = [ex.text_a for ex in examples]
    texts_b = [ex.text_b for ex in examples]
    paired = any(b is not None for b in texts_b)
    if not paired and truncation != "longest_first":
        truncation = "longest_first"  # a single text has nothing to choose between
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{cache_keys.tokenized(tokenizer, examples, max_length, truncation)}.npz"
        if path.is_file():
            log.info("tokenised inputs read from cache %s", path)
            return _load(path)
    if paired:
        enc = tokenizer(
            texts_a, [b or "" for b in texts_b], truncation=truncation, max_length=max_length
        )
    else:
        enc = tokenizer(texts_a, truncation=True, max_length=max_length)
    features: Features = {k: [list(map(int, v)) for v in enc[k]] for k in enc.keys()}
    if path is not None:
        _save(path, features)
    return features


def _save(path: Path, features: Features) -> None:
    arrays: Dict[str, np.ndarray] = {}
    for k, rows in features.items():
        arrays[f"{k}.values"] = np.fromiter((t for r in rows for t in r), dtype=np.int32)
        arrays[f"{k}.offsets"] = np.cumsum([0] + [len(r) for r in rows], dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    # write then rename, so a concurrent run never reads half a file
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _load(path: Path) -> Features:
    with np.load(path) as z:
        keys = sorted({n.rsplit(".", 1)[0] for n in z.files})
        out: Features = {}
        for k in keys:
            values, offsets = z[f"{k}.values"], z[f"{k}.offsets"]
            out[k] = [values[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    return out
