"""Sinkhorn in plain PyTorch that never holds an ``N x M`` matrix (backend "online_torch").

Each Sinkhorn update ``f_i = -eps logsumexp_j(h_j - C(x_i, y_j) / eps)`` is computed over
row blocks of at most ``BLOCK_ELEMENTS`` costs: a block's costs are built, reduced and
dropped, so memory is ``O((N + M) D)`` plus one block whatever N and M, on any device.
Every pass recomputes the costs and their exponentials, where the dense solver reuses
``exp(-C / eps)`` for a matrix-vector product: on CPU it is several times slower than
dense where both fit, the price of not storing them; it is the route past the dense
limit when KeOps is unavailable.

The last update runs through ``OnlineSoftmin``, whose backward recomputes each block and
gives the envelope gradient ``df_i / dx_i = sum_j pi_ij dC(x_i, y_j) / dx_i`` with
``pi_i = softmax_j(h_j - C_ij / eps)``, as the dense solver's last update does.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor

from kdlab.divergences.costs import cost_grad_x, cost_matrix
from kdlab.divergences.ot import PLAIN_KERNEL_MAX, solve_log_domain

BLOCK_ELEMENTS = 2**22  # costs per block (16 MB in float32)


def _blocks(x: Tensor, y: Tensor, cost: str) -> Iterator[Tuple[slice, Tensor]]:
    """``(rows, C[rows] [r, M])`` over row blocks of ``x``, without autograd."""
    step = max(1, BLOCK_ELEMENTS // max(1, y.shape[0]))
    with torch.no_grad():
        for r0 in range(0, x.shape[0], step):
            rows = slice(r0, min(x.shape[0], r0 + step))
            yield rows, cost_matrix(x[rows], y, cost)


def softmin_online(eps: float, x: Tensor, y: Tensor, h: Tensor, cost: str, plain: bool = False) -> Tensor:
    """``-eps logsumexp_j(h_j - C(x_i, y_j) / eps)`` for every ``i`` (``[N]``), no autograd.

    ``plain``: every cost is at most ``PLAIN_KERNEL_MAX * eps`` (``cost_bound``), so
    ``exp(-C / eps)`` cannot underflow and the sum is a product with the kernel block and
    ``exp(h - max h)``: the same value, about twice as fast as a log-sum-exp.
    """
    out = x.new_empty(x.shape[0])
    if plain:
        h_max = h.max()
        e_h = torch.exp(h - h_max)  # [M]; the largest entry is 1, so no row sum underflows
        for rows, C in _blocks(x, y, cost):
            out[rows] = -eps * (torch.log(C.mul_(-1.0 / eps).exp_() @ e_h) + h_max)
        return out
    for rows, C in _blocks(x, y, cost):
        out[rows] = -eps * torch.logsumexp(h[None, :] - C / eps, dim=1)
    return out


def cost_bound(x: Tensor, y: Tensor, cost: str) -> float:
    """An upper bound on every cost between ``x`` and ``y`` (triangle inequality), in O((N + M) D)."""
    p = 1 if cost == "l1" else 2
    bound = float(x.norm(p=p, dim=1).max() + y.norm(p=p, dim=1).max())
    return bound**2 / 2 if cost == "sqeuclidean" else bound


class OnlineSoftmin(torch.autograd.Function):
    """``softmin_online`` differentiable in ``x`` (``y`` and ``h`` are treated as constants)."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, h: Tensor, eps: float, cost: str, plain: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, y, h)
        ctx.eps, ctx.cost = eps, cost
        return softmin_online(eps, x, y, h, cost, plain)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, y, h = ctx.saved_tensors
        gx = torch.empty_like(x)
        for rows, C in _blocks(x, y, ctx.cost):
            pi = torch.softmax(h[None, :] - C / ctx.eps, dim=1)  # [r, M]
            gx[rows] = cost_grad_x(grad[rows, None] * pi, x[rows], y, C, ctx.cost)
        return gx, None, None, None, None, None


class OnlinePair:
    """Sinkhorn between uniform clouds ``u [N, D]`` and ``v [M, D]`` (``v`` constant)."""

    def __init__(self, u: Tensor, v: Tensor, eps: float, cost: str, bound: Optional[float] = None) -> None:
        """``bound``: an upper bound on every cost if known; else one is read off the points."""
        self.u, self.v, self.eps, self.cost = u, v.detach(), eps, cost
        self.log_a, self.log_b = -math.log(u.shape[0]), -math.log(v.shape[0])
        if bound is None:
            with torch.no_grad():
                bound = cost_bound(u, self.v, cost)
        self.plain = bound / eps <= PLAIN_KERNEL_MAX

    def solve(self, max_iter: int, tol: float, symmetric: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Potentials ``(f [N], g [M], iterations, last change)``, without autograd."""
        eps, u, v, cost, plain = self.eps, self.u.detach(), self.v, self.cost, self.plain
        with torch.no_grad():
            return solve_log_domain(lambda h: softmin_online(eps, u, v, h, cost, plain),
                                    lambda h: softmin_online(eps, v, u, h, cost, plain),
                                    u.new_zeros(u.shape[0]), u.new_zeros(v.shape[0]), eps, max_iter, tol, symmetric)

    def update(self, h: Tensor) -> Tensor:
        """The last f-update with autograd on ``u`` (envelope gradient)."""
        return OnlineSoftmin.apply(self.u, self.v, h.detach(), self.eps, self.cost, self.plain)

    def stats(self, f: Tensor, g: Tensor) -> Dict[str, Any]:
        """``<P, C>`` and the row-marginal error of ``P = exp((f + g - C) / eps) a b^T``,
        blockwise (0-dim tensors, on the device)."""
        transport, marginal = f.new_zeros(()), f.new_zeros(())
        for rows, C in _blocks(self.u.detach(), self.v, self.cost):
            P = torch.exp((f[rows, None] + g[None, :] - C) / self.eps + self.log_a + self.log_b)
            transport = transport + (P * C).sum()
            marginal = marginal + (P.sum(1) - math.exp(self.log_a)).abs().sum()
        return {"transport_cost": transport, "marginal_error": marginal}
