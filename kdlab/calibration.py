"""Calibration: expected calibration error and the reliability diagram's bins (Guo et al. 2017).

A model's confidence on an example is the probability it gives its own prediction (the max
softmax probability). The confidences are split into ``BINS`` equal-width bins of [0, 1]:
bin b holds (b/M, (b+1)/M], the first also holds 0, so a confidence of exactly 1.0 lands in
the last bin. ECE = sum over bins of (|B_b| / n) * |accuracy(B_b) - mean confidence(B_b)|.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

BINS = 15


def bin_index(confidence: np.ndarray, bins: int = BINS) -> np.ndarray:
    """The bin of each confidence: ``ceil(c * M) - 1``, clipped so that 0 is in bin 0."""
    c = np.asarray(confidence, dtype=np.float64)
    return np.clip(np.ceil(c * bins).astype(np.int64) - 1, 0, bins - 1)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> Dict[str, List[float]]:
    """Per bin: the example count, the mean confidence and the accuracy (0 for an empty bin)."""
    c = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if c.shape != ok.shape or c.ndim != 1:
        raise ValueError(f"confidence {c.shape} and correct {ok.shape} must be matching vectors")
    idx = bin_index(c, bins)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    safe = np.maximum(count, 1.0)
    return {"count": count.astype(int).tolist(),
            "confidence": (np.bincount(idx, weights=c, minlength=bins) / safe).tolist(),
            "accuracy": (np.bincount(idx, weights=ok, minlength=bins) / safe).tolist()}


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error over ``bins`` equal-width bins (module docstring)."""
    r = reliability(confidence, correct, bins)
    n = max(sum(r["count"]), 1)
    return float(sum(k / n * abs(a - c) for k, a, c in zip(r["count"], r["accuracy"], r["confidence"], strict=True)))
