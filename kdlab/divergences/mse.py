"""Mean squared error between logits (no softmax)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from kdlab.divergences import REGISTRY
from kdlab.divergences.base import LogitDivergence


@REGISTRY.register("mse")
class LogitMSE(LogitDivergence):
    """Logit MSE ``mean_c ((z_s - z_t) / T)^2`` per position, then the reduction.

    Symmetric; matches logits rather than distributions, so it also sees the logit
    offset that softmax discards (Ba and Caruana 2014; Kim et al. 2021 "Comparing
    Kullback-Leibler Divergence and Mean Squared Error Loss in Knowledge Distillation").
    With the default mean reduction it equals ``F.mse_loss(z_s / T, z_t / T)``, which is
    the regression KD term of the SinKD scripts (one output, e.g. STS-B). ``t2=True``
    cancels the 1/T^2.
    """

    needs_class_distributions = False  # raw logits: meaningful on a single output

    def prepare(self, s: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
        T = self.temperature
        return (s / T, t / T) if T != 1.0 else (s, t)

    def infinite_rows(self, s: Tensor, t: Tensor, log_q: Tensor, log_p: Tensor) -> Optional[Tensor]:
        """Raw logits, no probabilities: a logit that is ``-inf`` on one side only makes
        the row +inf (one that is ``-inf`` on both sides counts as 0)."""
        return (torch.isneginf(s) != torch.isneginf(t)).any(-1)

    def pointwise(self, s: Tensor, t: Tensor) -> Tensor:
        return (s - t).pow(2).mean(-1)
