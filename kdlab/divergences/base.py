"""Shared plumbing of every divergence: input checks, temperature, masking, reduction.

A divergence is called as ``div(student_logits, teacher_logits, mask=None)``:

- logits are ``[..., C]`` (``[B, C]`` for classification, ``[B, T, V]`` for sequences);
- ``mask`` is ``[...]`` bool, True = keep. Masked positions are removed *before* any
  arithmetic, so whatever they contain (even NaN or inf) cannot reach the value or the
  gradient;
- the teacher side is always detached;
- a ``-inf`` logit (vocabulary masking by an external or cached teacher) is a class of
  probability exactly 0. A class that is ``-inf`` in both inputs contributes exactly 0, as
  if it were removed, to the value and to the gradient; a class masked on one side only
  contributes what the divergence gives a zero probability there (0, or inf where the
  divergence is infinite, e.g. reverse KL of a class the teacher masks). See ``exact_rows``;
- half-precision inputs are upcast to float32 and autocast is disabled inside, so the
  loss is computed in float32 whatever the caller's precision (float64 stays float64).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from kdlab.errors import ConfigError

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


def compute_dtype(x: Tensor) -> Tensor:
    """float16/bfloat16 -> float32; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def no_autocast(x: Tensor) -> torch.autocast:
    return torch.autocast(device_type=x.device.type, enabled=False)


def flatten_inputs(
    student: Tensor, teacher: Tensor, mask: Optional[Tensor], min_dims: int = 1
) -> Tuple[Tensor, Tensor, int]:
    """Check shapes, drop masked positions, detach the teacher.

    Returns ``(s [N, C], t [N, C], n_rows)`` where ``n_rows`` is the leading dimension of
    the input (``B``), used by the ``batchmean`` reduction.
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
    if mask is not None:
        if mask.shape != student.shape[:-1]:
            raise ValueError(
                f"mask {tuple(mask.shape)} must have the shape of the logits without "
                f"their last dimension, {tuple(student.shape[:-1])}"
            )
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool (True = keep), got {mask.dtype}")
        keep = mask.reshape(-1)
        if not bool(keep.all()):
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


def reduce(values: Tensor, n_rows: int, reduction: str) -> Tensor:
    """Reduce per-position values ``[N]`` (masked positions already removed).

    mean: over kept positions (samples, or unmasked tokens); sum: their sum;
    batchmean: their sum divided by the leading dimension B of the input.
    An empty selection gives 0 (with a gradient path) rather than NaN.
    """
    if reduction == "sum":
        return values.sum()
    if reduction == "batchmean":
        return values.sum() / max(n_rows, 1)
    return values.sum() / max(values.numel(), 1)


# Where the plain formulas meet 0 * log 0 or -inf - (-inf), a -inf logit is raised so that
# it is at most this value once divided by the temperature: its probability is still
# exactly 0 but its log-probability is finite, so a class masked in both inputs contributes
# 0 * 0, never NaN, to the value and to the gradient. |NEG_LOGIT| * 100 (the largest
# |alpha|) is finite in float32: the alpha-divergences' exponents cannot become inf - inf.
NEG_LOGIT = -1e30


def finite_logits(x: Tensor, temperature: float) -> Tensor:
    """``x`` with ``-inf`` raised to ``NEG_LOGIT * min(T, 1)`` (finite after the division by
    T); the gradient is 0 at the raised entries."""
    return x.clamp_min(NEG_LOGIT * min(temperature, 1.0))


def exact_rows(
    div: LogitDivergence, s: Tensor, t: Tensor, with_grad: bool
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """``(log_q, values [N], h [N, C] or None)`` of rows ``s``, ``t`` ``[N, C]``, with every
    ``0 * log 0`` of a zero-probability class counted as 0.

    The plain formulas run first; only rows whose value is NaN, which a finite input can
    only give through ``0 * log 0`` or ``-inf - (-inf)`` of ``-inf`` logits, are computed
    again from ``finite_logits``. The other rows keep their value, an inf where the
    divergence is truly infinite included.
    """
    log_q, log_p = div.prepare(s, t)
    if with_grad:
        values, h = div.value_and_grad(log_q, log_p)
    else:
        values, h = div.pointwise(log_q, log_p), None
    nan = values.isnan()
    if bool(nan.any()):
        T = div.temperature
        log_q2, log_p2 = div.prepare(finite_logits(s, T), finite_logits(t, T))
        if with_grad:
            values2, h2 = div.value_and_grad(log_q2, log_p2)
            h = torch.where(nan[:, None], h2, h)
        else:
            values2 = div.pointwise(log_q2, log_p2)
        values = torch.where(nan, values2, values)
        log_q = torch.where(nan[:, None], log_q2, log_q)
    return log_q, values, h


# Rows are processed in blocks of about this many elements (256 rows at V = 32000): the
# temporaries of the elementwise passes are then block-sized instead of [N, V]. Smaller
# blocks were faster on an idle CPU but much slower on a loaded one (every op waits for
# its threads to be scheduled, and small blocks mean many ops).
FUSED_BLOCK = 1 << 23


class _FusedPointwise(torch.autograd.Function):
    """Per-position values of a softmax divergence with a hand-written gradient.

    With ``log_q = log_softmax(s / T)`` and ``h = dD/dlog q``, the gradient with respect to
    the student logits is ``(h - q sum_c h) / T`` (the softmax Jacobian).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, s: Tensor, t: Tensor, div: LogitDivergence, exact: bool
    ) -> Tensor:
        N, C = s.shape
        rows = max(1, FUSED_BLOCK // max(C, 1))
        values = s.new_empty(N)
        log_q_all = torch.empty_like(s)
        h_all = torch.empty_like(s)
        for i in range(0, N, rows):
            if exact:
                block = exact_rows(div, s[i : i + rows], t[i : i + rows], True)
                log_q, values[i : i + rows], h_all[i : i + rows] = block
            else:
                log_q, log_p = div.prepare(s[i : i + rows], t[i : i + rows])
                values[i : i + rows], h_all[i : i + rows] = div.value_and_grad(log_q, log_p)
            log_q_all[i : i + rows] = log_q
        ctx.save_for_backward(log_q_all, h_all)
        ctx.temperature = div.temperature
        return values

    @staticmethod
    def backward(ctx, grad_values: Tensor):  # type: ignore[override]
        log_q_all, h_all = ctx.saved_tensors
        N, C = h_all.shape
        rows = max(1, FUSED_BLOCK // max(C, 1))
        scale = grad_values / ctx.temperature
        grad = torch.empty_like(h_all)
        for i in range(0, N, rows):
            h = h_all[i : i + rows]
            g = grad[i : i + rows]
            torch.mul(log_q_all[i : i + rows].exp(), h.sum(-1, keepdim=True), out=g)
            torch.sub(h, g, out=g)
            g.mul_(scale[i : i + rows, None])
        return grad, None, None, None


class LogitDivergence(torch.nn.Module):
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

    # Members that define grad_log_q get a fused backward (one pass, two saved tensors)
    # instead of autograd through every elementwise op: at V = 32000 this is what keeps
    # them close to F.kl_div. Such members are differentiable once (no double backward).
    fused = False

    def grad_log_q(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        """``h = dD/dlog q`` per class ``[N, C]``, up to terms proportional to q (which
        the softmax projects out)."""
        raise NotImplementedError

    def value_and_grad(self, log_q: Tensor, log_p: Tensor) -> Tuple[Tensor, Tensor]:
        """``(pointwise, grad_log_q)``; override to share intermediate tensors."""
        return self.pointwise(log_q, log_p), self.grad_log_q(log_q, log_p)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        s, t, n_rows = flatten_inputs(student_logits, teacher_logits, mask)
        check_range("temperature", self.temperature, 0.0, low_open=True)  # may be set between calls
        if self.check_inputs:
            check_not_probabilities(s, "student_logits")
            check_not_probabilities(t, "teacher_logits")
        self.log_cap = LOG_CAP_FP16 if student_logits.dtype == torch.float16 else LOG_CAP
        with no_autocast(s):
            s, t = compute_dtype(s), compute_dtype(t)
            out = reduce(self._values(s, t, exact=False), n_rows, self.reduction)
            if math.isnan(out.item()):  # -inf logits met 0 * log 0 (rare): again, as 0
                out = reduce(self._values(s, t, exact=True), n_rows, self.reduction)
            if self.t2:
                out = out * (self.temperature**2)
        return out

    def _values(self, s: Tensor, t: Tensor, exact: bool) -> Tensor:
        """Per-position values ``[N]``; ``exact``: every ``0 * log 0`` counted as 0 (see
        ``exact_rows``), at the cost of a second pass over the rows that need it."""
        if not (torch.is_grad_enabled() and s.requires_grad):
            return exact_rows(self, s, t, False)[1] if exact else self.pointwise(*self.prepare(s, t))
        if self.fused:
            return _FusedPointwise.apply(s, t, self, exact)
        if exact:  # autograd: no NaN may enter the graph, not even in an unselected branch
            s, t = finite_logits(s, self.temperature), finite_logits(t, self.temperature)
        return self.pointwise(*self.prepare(s, t))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, t2={self.t2}, reduction={self.reduction!r}"
