"""Shared plumbing of every divergence: input checks, temperature, masking, reduction.

A divergence is called as ``div(student_logits, teacher_logits, mask=None)``:

- logits are ``[..., C]`` (``[B, C]`` for classification, ``[B, T, V]`` for sequences);
- ``mask`` is ``[...]`` bool, True = keep. Masked positions count as removed: their
  values and gradients are replaced by exact zeros on the device (no host
  synchronisation), so whatever they contain (even NaN or inf) cannot reach the value or
  the gradient;
- the teacher side is always detached;
- a ``-inf`` logit (vocabulary masking by an external or cached teacher) is a class of
  probability exactly 0. A class that is ``-inf`` in both inputs contributes exactly 0, as
  if it were removed, to the value and to the gradient; a class masked on one side only
  contributes what the divergence gives a zero probability there (0, or inf where the
  divergence is infinite, e.g. reverse KL of a class the teacher masks). See
  ``finite_logits`` and ``LogitDivergence.infinite_rows``;
- half-precision inputs are upcast to float32 block by block and autocast is disabled
  inside, so the loss is computed in float32 whatever the caller's precision (float64
  stays float64), without a float32 copy of the whole logits; the gradient is kept in the
  logits' own dtype.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from kdlab.divergences.chunked import NEG_LOGIT, compute_dtype, finite_logits, position_values
from kdlab.errors import ConfigError
from kdlab.terms import LogitTerm

__all__ = ["NEG_LOGIT", "compute_dtype", "finite_logits", "position_values"]  # shared with the methods

REDUCTIONS = ("mean", "sum", "batchmean")

# Per-class terms of the unbounded members (chi^2, alpha outside [0, 1]) are capped at
# e^cap: cap = 60 (a probability below ~1e-26 counts as 1e-26 in a denominator), without
# which an underflowing probability makes the value inf in float32. For float16 inputs
# the cap is 8 (terms <= ~3000), so that their gradients stay inside float16's range.
LOG_CAP = 60.0
LOG_CAP_FP16 = 8.0


def check_range(
    name: str,
    value: float,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Raise ConfigError naming ``name``, ``value`` and the valid interval if out of range."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if math.isnan(v) or too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"{name} must be in {interval}, got {value!r}")
    return v


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def no_autocast(x: Tensor) -> torch.autocast:
    return torch.autocast(device_type=x.device.type, enabled=False)


def check_logits(
    student: Tensor, teacher: Tensor, mask: Optional[Tensor], min_dims: int = 1
) -> Tuple[Tensor, Tensor, Optional[Tensor], int]:
    """Check shapes, flatten the positions, detach the teacher; no host synchronisation.

    Returns ``(s [N, C], t [N, C], keep [N] bool or None, n_rows)`` where ``n_rows`` is the
    leading dimension of the input (``B``), used by the ``batchmean`` reduction.
    """
    if not isinstance(student, Tensor) or not isinstance(teacher, Tensor):
        raise TypeError("student_logits and teacher_logits must be torch.Tensor")
    if student.shape != teacher.shape:
        raise ValueError(
            f"student_logits {tuple(student.shape)} and teacher_logits "
            f"{tuple(teacher.shape)} must have the same shape [..., C]"
        )
    if student.dim() < min_dims:
        raise ValueError(f"logits must have at least {min_dims} dimension(s), got a scalar")
    if not student.is_floating_point():
        raise ValueError(f"logits must be floating point, got {student.dtype}")
    n_rows = student.shape[0] if student.dim() > 1 else 1
    C = student.shape[-1]
    s = student.reshape(-1, C)
    t = teacher.detach().reshape(-1, C)
    keep = None
    if mask is not None:
        if mask.shape != student.shape[:-1]:
            raise ValueError(
                f"mask {tuple(mask.shape)} must have the shape of the logits without "
                f"their last dimension, {tuple(student.shape[:-1])}"
            )
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool (True = keep), got {mask.dtype}")
        keep = mask.reshape(-1)
    return s, t, keep, n_rows


def flatten_inputs(
    student: Tensor, teacher: Tensor, mask: Optional[Tensor], min_dims: int = 1
) -> Tuple[Tensor, Tensor, int]:
    """``check_logits``, then drop the masked positions: ``(s [N, C], t [N, C], n_rows)``.

    For divergences that couple positions (batch-wise optimal transport), which need the
    kept rows themselves; selecting them synchronises with the host.
    """
    s, t, keep, n_rows = check_logits(student, teacher, mask, min_dims)
    if keep is not None:
        s, t = s[keep], t[keep]
    return s, t, n_rows


def check_not_probabilities(x: Tensor, which: str) -> None:
    """Raise if every row of ``x`` is a probability vector (non-negative, sums to 1).

    Logits almost never look like that, probabilities always do: this catches passing
    ``softmax`` outputs where logits are expected.
    """
    if x.numel() == 0 or x.shape[-1] < 2:
        return
    with torch.no_grad():
        xf = x.float()
        looks_like_probs = bool((xf >= 0).all()) and bool(
            torch.allclose(xf.sum(-1), torch.ones(()), atol=1e-3)
        )
    if looks_like_probs:
        raise ValueError(
            f"{which} look like probabilities (non-negative rows summing to 1); "
            "divergences take logits. Pass the pre-softmax outputs."
        )


def reduce(values: Tensor, n_rows: int, reduction: str, keep: Optional[Tensor] = None) -> Tensor:
    """Reduce per-position values ``[N]``, which are 0 where ``keep [N]`` is False (or
    whose masked positions are already removed, ``keep`` None).

    mean: over kept positions (samples, or unmasked tokens); sum: their sum;
    batchmean: their sum divided by the leading dimension B of the input.
    An empty selection gives 0 (with a gradient path) rather than NaN.
    """
    if reduction == "sum":
        return values.sum()
    if reduction == "batchmean":
        return values.sum() / max(n_rows, 1)
    if keep is None:
        return values.sum() / max(values.numel(), 1)
    return values.sum() / keep.sum().clamp_min(1).to(values.dtype)  # on the device: no sync


def zero_against_mass(x: Tensor, log_other: Tensor) -> Tensor:
    """``[n]`` bool: some class has a ``-inf`` logit in ``x [n, C]`` and a positive
    probability ``exp(log_other) > 0`` on the other side."""
    return torch.where(torch.isneginf(x), log_other, -math.inf).amax(-1).exp() > 0


class LogitDivergence(LogitTerm):
    """Base of divergences between per-position distributions softmax(z / T).

    Subclasses implement ``pointwise(log_q, log_p) -> [N]`` on log-probabilities of the
    student (``log_q``) and teacher (``log_p``), as produced by ``prepare`` (override it
    to work on something else, e.g. raw logits). The base handles checks, temperature,
    masking, the optional T^2 factor and the reduction.

    Args:
        temperature: T > 0; both distributions are softmax(logits / T). The trainer may
            change it between steps.
        t2: multiply the result by T^2 (Hinton et al. 2015), which keeps gradient
            magnitudes comparable across temperatures.
        reduction: "mean" over kept positions (samples for [B, C], unmasked tokens for
            [B, T, V]), "sum", or "batchmean" (sum divided by B).
        check_inputs: raise ValueError if either input looks like probabilities rather
            than logits (costs one pass over the inputs).
    """

    # Compares softmax distributions over the classes, which are all 1 on a single output
    # (a regression head): the objective refuses such a term there (it would be 0).
    needs_class_distributions = True
    # The temperature's schedule during training (``kd``: objective.kd.anneal); a top-k
    # teacher cache, stored at one temperature, refuses any other than "none".
    anneal = "none"
    # What the generic tests (tests/divergences/test_family.py, which list the registered
    # divergences) rely on: the value is 0 when the inputs are equal (False for a cross-
    # entropy), and parameters other than the defaults to exercise a parametric member with.
    zero_on_identical = True
    example_params: Dict[str, Any] = {}

    def __init__(
        self,
        temperature: float = 1.0,
        t2: bool = False,
        reduction: str = "mean",
        check_inputs: bool = False,
    ) -> None:
        super().__init__()
        self.temperature = check_range("temperature", temperature, 0.0, low_open=True)
        self.t2 = bool(t2)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.check_inputs = bool(check_inputs)
        # cap of per-class terms for unbounded members, set per call from the input dtype
        self.log_cap = LOG_CAP

    def prepare(self, s: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
        """Student and teacher log-probabilities at the current temperature."""
        T = self.temperature
        if T != 1.0:
            s, t = s / T, t / T
        return torch.log_softmax(s, dim=-1), torch.log_softmax(t, dim=-1)

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:  # [N, C] x2 -> [N]
        raise NotImplementedError

    @property
    def takes_sparse_teacher(self) -> bool:  # type: ignore[override]
        """A softmax divergence (``prepare`` the plain log-softmax; not ``mse``, which
        compares raw logits) can read a top-k teacher (``kdlab.divergences.sparse``)."""
        return type(self).prepare is LogitDivergence.prepare

    def sparse_value(self, z_s: Tensor, teacher: Any, mask: Optional[Tensor]) -> Tensor:
        from kdlab.divergences.sparse import sparse_divergence  # sparse builds on this module

        return sparse_divergence(self, z_s, teacher, mask=mask)

    # Members that define grad_log_q (or value_and_grad) get a fused backward: the
    # gradient is computed with the value, block by block, and is the only tensor kept for
    # the backward; at V = 32000 this is what keeps them close to F.kl_div. Such members
    # are differentiable once (no double backward). The others are recomputed block by
    # block with autograd in the backward. See ``kdlab.divergences.chunked``.
    fused = False

    def grad_log_q(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        """``h = dD/dlog q`` per class ``[N, C]``, up to terms proportional to q (which
        the softmax projects out)."""
        raise NotImplementedError

    def value_and_grad(self, log_q: Tensor, log_p: Tensor) -> Tuple[Tensor, Tensor]:
        """``(pointwise, grad_log_q)``; override to share intermediate tensors."""
        return self.pointwise(log_q, log_p), self.grad_log_q(log_q, log_p)

    def value_and_logit_grad(self, log_q: Tensor, log_p: Tensor) -> Tuple[Tensor, Tensor]:
        """``(pointwise, dD/d(s / T))``: the softmax Jacobian applied to ``h = dD/dlog q``,
        ``h - q sum_c h``. Override where the product has a closed form (KL: ``q - p``)."""
        values, h = self.value_and_grad(log_q, log_p)
        return values, torch.addcmul(h, log_q.exp(), h.sum(-1, keepdim=True), value=-1.0)

    # Which zero probability makes a class term, hence the value, +inf where the other
    # distribution has mass: "student" (q = 0, e.g. KL(p || q)), "teacher" (p = 0, e.g.
    # KL(q || p)), "either", or None (bounded members, and those whose terms are capped).
    infinite_at: Optional[str] = None

    def infinite_rows(self, s: Tensor, t: Tensor, log_q: Tensor, log_p: Tensor) -> Optional[Tensor]:
        """Rows ``[n]`` whose value is +inf: some class is ``-inf`` in one raw input
        (``s``, ``t``) and has a positive probability in the other (``log_q``, ``log_p``,
        computed from finite logits), on the side(s) named by ``infinite_at``. None when
        the member is never infinite. Computed on the device: no host synchronisation."""
        rows: Optional[Tensor] = None
        if self.infinite_at in ("student", "either"):
            rows = zero_against_mass(s, log_p)
        if self.infinite_at in ("teacher", "either"):
            other = zero_against_mass(t, log_q)
            rows = other if rows is None else rows | other
        return rows

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        s, t, keep, n_rows = check_logits(student_logits, teacher_logits, mask)
        check_range("temperature", self.temperature, 0.0, low_open=True)  # may be set between calls
        if self.check_inputs:  # opt-in: selecting the kept rows synchronises with the host
            check_not_probabilities(s if keep is None else s[keep], "student_logits")
            check_not_probabilities(t if keep is None else t[keep], "teacher_logits")
        self.log_cap = LOG_CAP_FP16 if student_logits.dtype == torch.float16 else LOG_CAP
        with no_autocast(s):
            out = reduce(position_values(self, s, t, keep), n_rows, self.reduction, keep)
            if self.t2:
                out = out * (self.temperature**2)
        return out

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, t2={self.t2}, reduction={self.reduction!r}"
