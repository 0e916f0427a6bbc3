"""Per-position values of a softmax divergence, computed over blocks of rows.

``position_values(div, s, t, keep)`` is the one place where a ``LogitDivergence`` meets
its ``[N, C]`` logits: the class-level call (``[B, C]``) and the token-level call
(``[B*T, V]``, a mask over tokens) both go through it. It

- works on blocks of about ``BLOCK`` elements (256 rows at V = 32,000): beyond the inputs
  and their gradient, every temporary (the float32 upcast of half-precision logits, the
  log-probabilities, the per-class terms) is block-sized, never ``[N, V]``;
- never synchronises with the host: masked positions (``keep`` False) are computed like
  the others and their values and gradients replaced by exact zeros with ``torch.where``
  (whatever they hold, NaN included, cannot leak), and ``-inf`` logits are handled on
  the device (``finite_logits`` and ``LogitDivergence.infinite_rows``);
- for members with a hand-written gradient (``fused = True``) computes the gradient in the
  same pass as the value and keeps only it, in the logits' own dtype, until the backward,
  which scales it by the incoming gradient; for the others it keeps nothing but the
  inputs and recomputes each block with autograd in the backward.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable, Optional, Tuple

import torch
from torch import Tensor

if TYPE_CHECKING:
    from kdlab.divergences.base import LogitDivergence

# Rows are processed in blocks of about this many elements: 64 rows at V = 32,000 on the
# CPU (8 MB per float32 temporary; larger blocks were no faster on the shared 2-core
# machine, and a block of 256 rows was as large as a whole small batch). On a GPU every op
# is a kernel launch from Python: larger blocks (1024 rows at V = 32,000, about 130 MB per
# float32 temporary) keep the launches few while the temporaries stay a fraction of the
# [N, V] tensors.
BLOCK = 1 << 21
BLOCK_GPU = 1 << 25

# Where the plain formulas meet 0 * log 0 or -inf - (-inf), a -inf logit is raised so that
# it is at most this value once divided by the temperature: its probability is still
# exactly 0 but its log-probability is finite, so a class masked in both inputs contributes
# 0 * 0, never NaN, to the value and to the gradient. |NEG_LOGIT| * 100 (the largest
# |alpha|) is finite in float32: the alpha-divergences' exponents cannot become inf - inf.
NEG_LOGIT = -1e30


def compute_dtype(x: Tensor) -> Tensor:
    """float16/bfloat16 -> float32; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def finite_logits(x: Tensor, temperature: float) -> Tensor:
    """``x`` in its compute dtype with ``-inf`` raised to ``NEG_LOGIT * min(T, 1)`` (finite
    after the division by T); the gradient is 0 at the raised entries."""
    low = NEG_LOGIT * min(temperature, 1.0)
    if x.dtype in (torch.float16, torch.bfloat16):  # raised first: the upcast then reads half the bytes
        return x.clamp_min(max(low, torch.finfo(x.dtype).min)).float()
    return x.clamp_min(low)


def block_rows(x: Tensor) -> int:
    """Rows per block of ``x [N, C]`` on its device."""
    size = BLOCK if x.device.type == "cpu" else BLOCK_GPU
    return max(1, size // max(x.shape[-1], 1))


def block_values(div: LogitDivergence, s: Tensor, t: Tensor, with_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """``(values [n], grad [n, C] or None)`` of one block of raw logits ``s``, ``t``.

    Every ``0 * log 0`` of a zero-probability class counts as 0: the formulas run on
    ``finite_logits``, where a ``-inf`` logit has probability exactly 0 and a finite
    log-probability. A divergence that is truly infinite (reverse KL of a class the
    teacher masks but the student does not) stays +inf: ``div.infinite_rows`` reads those
    rows off the raw logits. ``grad`` is ``dD/ds`` (the softmax Jacobian applied to
    ``h = dD/dlog q``), for the fused members only.
    """
    T = div.temperature
    log_q, log_p = div.prepare(finite_logits(s, T), finite_logits(t, T))
    if with_grad:
        values, grad = div.value_and_logit_grad(log_q, log_p)
        if T != 1.0:
            grad.div_(T)
    else:
        values, grad = div.pointwise(log_q, log_p), None
    infinite = div.infinite_rows(s, t, log_q, log_p)
    if infinite is not None:
        values = torch.where(infinite, torch.inf, values)
    return values, grad


def _masked(x: Tensor, keep: Optional[Tensor]) -> Tensor:
    """``x`` (``[n]`` or ``[n, C]``) with the rows of masked positions set to exact zeros."""
    if keep is None:
        return x
    return torch.where(keep if x.dim() == 1 else keep[:, None], x, 0.0)


# (s_block, t_block, with_grad) -> (values [n], dvalues/ds [n, C] or None)
BlockFn = Callable[[Tensor, Tensor, bool], Tuple[Tensor, Optional[Tensor]]]


def _blocks(s: Tensor, t: Tensor, keep: Optional[Tensor], fn: BlockFn, grad: Optional[Tensor] = None) -> Tensor:
    """Values ``[N]`` of ``fn`` over the row blocks of ``s [N, C]`` and ``t [N, ...]``,
    zero where ``keep`` is False; the gradient is written into ``grad`` when one is given."""
    N, C = s.shape
    rows = block_rows(s)
    values = torch.empty(N, dtype=compute_dtype(s).dtype, device=s.device)
    for i in range(0, N, rows):
        k = None if keep is None else keep[i : i + rows]
        v, g = fn(s[i : i + rows], t[i : i + rows], grad is not None)
        values[i : i + rows] = _masked(v, k)
        if grad is not None:
            grad[i : i + rows] = g
            if k is not None:  # in place, after the cast: a masked row may hold NaN
                grad[i : i + rows].masked_fill_(~k[:, None], 0.0)
    return values


class _Fused(torch.autograd.Function):
    """Per-position values ``[N]`` of a ``BlockFn``; the gradient is computed in the
    forward and kept (in the dtype of ``s``) as the only saved tensor, the backward scales
    it (differentiable once)."""

    @staticmethod
    def forward(ctx, s: Tensor, t: Tensor, keep: Optional[Tensor], fn: BlockFn) -> Tensor:  # type: ignore[override]
        grad = torch.empty_like(s)  # [N, C]
        values = _blocks(s, t, keep, fn, grad)
        ctx.save_for_backward(grad)
        return values

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_values: Tensor):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        out = torch.empty_like(grad)
        rows = block_rows(grad)
        for i in range(0, grad.shape[0], rows):  # scaled in float32, rounded once to grad's dtype
            torch.mul(grad[i : i + rows], grad_values[i : i + rows, None], out=out[i : i + rows])
        return out, None, None, None


def _fused_or_not(s: Tensor, t: Tensor, keep: Optional[Tensor], fn: BlockFn) -> Tensor:
    if torch.is_grad_enabled() and s.requires_grad:
        return _Fused.apply(s, t, keep, fn)
    with torch.no_grad():
        return _blocks(s, t, keep, fn)


class _Recomputed(torch.autograd.Function):
    """Values of a ``BlockFn`` without a hand-written gradient: the forward keeps no
    intermediate, the backward recomputes each block with autograd."""

    @staticmethod
    def forward(ctx, s: Tensor, t: Tensor, keep: Optional[Tensor], fn: BlockFn) -> Tensor:  # type: ignore[override]
        ctx.fn, ctx.has_keep = fn, keep is not None
        ctx.save_for_backward(s, t, keep if keep is not None else s.new_empty(0))
        return _values_without_grad(fn, s, t, keep)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_values: Tensor):  # type: ignore[override]
        s, t, keep = ctx.saved_tensors
        rows = block_rows(s)
        grad = torch.empty_like(s)
        for i in range(0, s.shape[0], rows):
            with torch.enable_grad():
                block = s[i : i + rows].detach().requires_grad_(True)
                values = ctx.fn(block, t[i : i + rows], False)[0]
                values = values * _masked(grad_values[i : i + rows], keep[i : i + rows] if ctx.has_keep else None)
                (g,) = torch.autograd.grad(values.sum(), block)
            grad[i : i + rows] = _masked(g, keep[i : i + rows] if ctx.has_keep else None)
        return grad, None, None, None


def _values_without_grad(fn: BlockFn, s: Tensor, t: Tensor, keep: Optional[Tensor]) -> Tensor:
    with torch.no_grad():
        return _blocks(s, t, keep, fn)


def recomputed_values(fn: BlockFn, s: Tensor, t: Tensor, keep: Optional[Tensor] = None) -> Tensor:
    """Per-position values ``[N]`` of ``fn`` over the row blocks of ``s [N, C]`` and
    ``t [N, ...]``, 0 with a zero gradient where ``keep`` is False; the backward
    recomputes each block with autograd (``fn`` may ignore ``with_grad``)."""
    if torch.is_grad_enabled() and s.requires_grad:
        return _Recomputed.apply(s, t, keep, fn)
    return _values_without_grad(fn, s, t, keep)


def position_values(div: LogitDivergence, s: Tensor, t: Tensor, keep: Optional[Tensor] = None) -> Tensor:
    """Per-position values ``[N]`` of ``div`` between student logits ``s [N, C]`` and
    teacher logits ``t [N, C]`` (detached), in float32 for half-precision inputs; 0 at the
    positions where ``keep [N]`` (bool) is False, with a zero gradient there.

    The single entry point of the divergence computation: another representation of the
    teacher (e.g. a sparse top-k) belongs next to this function, not inside a member.
    """
    fn = functools.partial(block_values, div)
    return _fused_or_not(s, t, keep, fn) if div.fused else recomputed_values(fn, s, t, keep)


def _cross_entropy_block(z: Tensor, targets: Tensor, with_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    log_q = torch.log_softmax(compute_dtype(z), dim=-1)
    values = -log_q.gather(-1, targets[:, None]).squeeze(-1)
    if not with_grad:
        return values, None
    grad = log_q.exp_()  # softmax - one-hot
    grad.scatter_add_(-1, targets[:, None], grad.new_full((grad.shape[0], 1), -1.0))
    return values, grad


def position_cross_entropy(logits: Tensor, targets: Tensor, keep: Optional[Tensor] = None) -> Tensor:
    """Cross-entropy ``-log softmax(logits)[target]`` per position ``[N]`` of ``logits
    [N, V]`` and ``targets [N]`` (long, valid indices everywhere), float32 for
    half-precision logits; 0 with a zero gradient where ``keep [N]`` is False. Blocks of
    rows as above: no float32 copy of the whole logits."""
    return _fused_or_not(logits, targets, keep, _cross_entropy_block)
