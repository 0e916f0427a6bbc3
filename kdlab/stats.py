"""Paired differences between two rows of a table, with a t interval.

Two rows run with the same seed share the teacher, the seed's training and dev subsets, their
order and the student's initial weights, so their scores are paired by seed: the difference per seed removes what the
seeds have in common, and its spread, not the spread of each row, says whether the rows
differ. The interval is the paired t interval (Student's t with n - 1 degrees of freedom,
quantile from ``scipy.stats.t``): mean(d) ± t_{(1+level)/2, n-1} · sd(d) / sqrt(n).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Optional

from scipy.stats import t as student_t

LEVEL = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a[s] - b[s]`` over the seeds both have, and its t interval (None under 2 pairs)."""

    n: int
    mean: Optional[float]
    low: Optional[float] = None
    high: Optional[float] = None

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (never with fewer than 2 pairs: no interval)."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> PairedDifference:
    """``a - b`` paired by key (the seed); seeds only one side has are left out."""
    seeds = sorted(a.keys() & b.keys())
    d = [a[s] - b[s] for s in seeds]
    if not d:
        return PairedDifference(0, None)
    mean = statistics.fmean(d)
    if len(d) < 2:
        return PairedDifference(1, mean)
    half = float(student_t.ppf((1 + level) / 2, len(d) - 1)) * statistics.stdev(d) / math.sqrt(len(d))
    return PairedDifference(len(d), mean, mean - half, mean + half)
