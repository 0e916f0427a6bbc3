"""Sound entropic optimal transport between two uniform point clouds (SinKD's sound mode).

With ``a = 1/N``, ``b = 1/M`` and cost ``C[i, j] = c(x_i, y_j)``::

    OT_eps(a, b) = min_P <P, C> + eps KL(P | a b^T)   s.t. P 1 = a, P^T 1 = b
                 = max_{f, g} <a, f> + <b, g>           (dual, attained by Sinkhorn)
    S_eps(a, b)  = OT_eps(a, b) - OT_eps(a, a) / 2 - OT_eps(b, b) / 2      (debias=True)

``S_eps`` is zero when the two clouds coincide and positive otherwise (Feydy et al.,
"Interpolating between Optimal Transport and MMD using Sinkhorn Divergences", AISTATS
2019). Sinkhorn updates of the potentials (``f_i = -eps log sum_j b_j
exp((g_j - C_ij) / eps)`` and the symmetric one for the debiasing terms) run until the
potentials move by less than ``tol`` (cost units) or ``max_iter`` is reached.

The potentials are kept in the log domain. When the whole kernel ``exp(-C / eps)`` is
representable (``max C / eps <= 30``, always true for SinKD's costs <= 2 and eps = 0.1)
each update is a matrix-vector product with that kernel, which is exact there and much
faster than a log-sum-exp over the matrix; otherwise the updates use log-sum-exp.

Gradients: "envelope" runs the loop without autograd, then takes one last update with
autograd on (teacher side detached), whose gradient is the envelope-theorem gradient
``dOT/dC = P`` at convergence (as GeomLoss does); "unrolled" differentiates through
every iteration (memory grows with the iteration count).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Set, Tuple

import torch
from torch import Tensor

from kdlab.divergences.base import check_choice, check_range
from kdlab.errors import ConfigError

COSTS = ("l1", "euclidean", "sqeuclidean")
BACKENDS = ("auto", "dense", "tensorized", "online", "multiscale")
GEOMLOSS_BACKENDS = ("tensorized", "online", "multiscale")
PLAIN_KERNEL_MAX = 30.0  # max C / eps for which exp(-C / eps) is used directly


@dataclass
class SoundOptions:
    cost: str = "l1"
    debias: bool = True
    max_iter: int = 200
    tol: float = 1e-5
    gradient: str = "envelope"
    backend: str = "auto"
    scaling: float = 0.9
    auto_dense_max: int = 4096 * 4096

    def __post_init__(self) -> None:
        check_choice("cost", self.cost, COSTS)
        check_choice("gradient", self.gradient, ("envelope", "unrolled"))
        check_choice("backend", self.backend, BACKENDS)
        self.max_iter = int(check_range("max_iter", self.max_iter, 1))
        self.tol = check_range("tol", self.tol, 0.0)
        self.scaling = check_range("scaling", self.scaling, 0.0, 1.0, low_open=True, high_open=True)
        self.auto_dense_max = int(check_range("auto_dense_max", self.auto_dense_max, 1))
        self.debias = bool(self.debias)
        if self.gradient == "unrolled" and self.backend in GEOMLOSS_BACKENDS:
            raise ConfigError(
                f"gradient='unrolled' needs backend 'dense' or 'auto', got backend={self.backend!r} "
                "(GeomLoss differentiates through the converged potentials only)"
            )
        if self.backend == "multiscale" and self.cost == "l1":
            raise ConfigError("backend='multiscale' supports cost 'euclidean' or 'sqeuclidean', not 'l1'")


def cost_matrix(x: Tensor, y: Tensor, cost: str) -> Tensor:
    """``[N, D] x [M, D] -> [N, M]`` pairwise costs."""
    if cost == "l1":
        return torch.cdist(x.unsqueeze(0), y.unsqueeze(0), p=1).squeeze(0)
    if cost == "euclidean":
        return torch.cdist(x.unsqueeze(0), y.unsqueeze(0), p=2).squeeze(0)
    d2 = (x * x).sum(-1)[:, None] + (y * y).sum(-1)[None, :] - 2 * x @ y.T
    return d2.clamp_min(0) / 2


def softmin(eps: float, C: Tensor, h: Tensor, dim: int) -> Tensor:
    """``-eps * logsumexp(h - C / eps)`` along ``dim`` (h broadcast along the other)."""
    if dim == 1:
        return -eps * torch.logsumexp(h[None, :] - C / eps, dim=1)
    return -eps * torch.logsumexp(h[:, None] - C / eps, dim=0)


def solve(C: Tensor, eps: float, max_iter: int, tol: float, symmetric: bool) -> Tuple[Tensor, Tensor, int, float]:
    """Sinkhorn potentials ``(f [N], g [M], iterations, last change)`` for uniform weights.

    ``symmetric``: C is the cost of a cloud with itself; averaged updates
    ``f <- (f + T(f)) / 2`` converge in a few steps and ``g = f``.
    Differentiable if called with autograd on (unrolled gradient).
    """
    if float(C.detach().max()) / eps <= PLAIN_KERNEL_MAX:
        return _solve_kernel(torch.exp(-C / eps), eps, max_iter, tol, symmetric)
    return _solve_lse(C, eps, max_iter, tol, symmetric)


def _solve_kernel(K: Tensor, eps: float, max_iter: int, tol: float, symmetric: bool) -> Tuple[Tensor, Tensor, int, float]:
    """Updates as matrix-vector products with ``K = exp(-C / eps)`` ``[N, M]``.

    Scalings ``u = a exp(f / eps)``, ``v = b exp(g / eps)``, so that ``P = diag(u) K diag(v)``.
    """
    N, M = K.shape
    a, b = 1.0 / N, 1.0 / M
    u = K.new_full((N,), a)  # f = 0
    v = K.new_full((M,), b)  # g = 0
    change, iters = math.inf, 0
    while iters < max_iter:
        iters += 1
        if symmetric:  # f <- (f + T(f)) / 2
            u_new = torch.sqrt(u * a / (K @ u))
            ratio, u = u_new / u, u_new
        else:
            u = a / (K @ v)
            v_new = b / (K.T @ u)
            ratio, v = v_new / v, v_new
        change = eps * float(ratio.detach().log().abs().max())
        if change < tol:
            break
    f = eps * torch.log(u / a)
    return (f, f, iters, change) if symmetric else (f, eps * torch.log(v / b), iters, change)


def _solve_lse(C: Tensor, eps: float, max_iter: int, tol: float, symmetric: bool) -> Tuple[Tensor, Tensor, int, float]:
    """Updates in the log domain, ``f_i = -eps logsumexp_j(log b_j + (g_j - C_ij) / eps)``."""
    N, M = C.shape
    log_a, log_b = -math.log(N), -math.log(M)
    f = C.new_zeros(N)
    g = C.new_zeros(M)
    change, iters = math.inf, 0
    while iters < max_iter:
        iters += 1
        if symmetric:
            f_new = 0.5 * (f + softmin(eps, C, f / eps + log_a, dim=1))
            change = float((f_new - f).detach().abs().max())
            f = g = f_new
        else:
            f = softmin(eps, C, g / eps + log_b, dim=1)
            g_new = softmin(eps, C, f / eps + log_a, dim=0)
            change = float((g_new - g).detach().abs().max())
            g = g_new
        if change < tol:
            break
    return f, g, iters, change


def _dense(x: Tensor, y: Tensor, eps: float, opt: SoundOptions) -> Tuple[Tensor, Dict[str, Any]]:
    y = y.detach()
    N, M = x.shape[0], y.shape[0]
    log_a, log_b = -math.log(N), -math.log(M)
    unrolled = opt.gradient == "unrolled" and torch.is_grad_enabled()
    C_xy = cost_matrix(x, y, opt.cost)  # [N, M]
    with torch.set_grad_enabled(unrolled):
        f, g, iters, change = solve(C_xy if unrolled else C_xy.detach(), eps, opt.max_iter, opt.tol, False)
    if not unrolled:  # last update with autograd: envelope gradient dOT/dC = P
        f = softmin(eps, C_xy, g.detach() / eps + log_b, dim=1)
    value = f.mean() + g.mean()
    stats: Dict[str, Any] = {"iterations": iters, "converged": change < opt.tol}
    if opt.debias:
        C_yy = cost_matrix(y, y, opt.cost)  # [M, M], teacher only: no gradient
        with torch.no_grad():
            g_bb = solve(C_yy, eps, opt.max_iter, opt.tol, True)[0]
        if unrolled:
            f_aa = solve(cost_matrix(x, x, opt.cost), eps, opt.max_iter, opt.tol, True)[0]
        else:
            # one-sided cost: the gradient of <a, f_aa> is half that of OT(a, a)
            C_xx = cost_matrix(x, x.detach(), opt.cost)
            with torch.no_grad():
                f_aa = solve(C_xx.detach(), eps, opt.max_iter, opt.tol, True)[0]
            f_aa = softmin(eps, C_xx, f_aa.detach() / eps + log_a, dim=1)
        value = value - f_aa.mean() - g_bb.mean()
    with torch.no_grad():
        log_P = (f.detach()[:, None] + g.detach()[None, :] - C_xy.detach()) / eps + log_a + log_b
        P = log_P.exp()
        stats["transport_cost"] = float((P * C_xy.detach()).sum())
        stats["marginal_error"] = float((P.sum(1) - 1.0 / N).abs().sum())
    return value, stats


_FAILED_BACKENDS: Set[str] = set()  # KeOps backends that failed once: not retried
_WARNED: Set[str] = set()


def _fall_back(backend: str, reason: str, remember: bool) -> str:
    """Warn once per backend and return "dense"; ``remember``: never try it again."""
    if backend not in _WARNED:
        warnings.warn(f"Sinkhorn backend {backend!r} unavailable ({reason}); using the dense backend",
                      RuntimeWarning, stacklevel=4)
        _WARNED.add(backend)
    if remember:
        _FAILED_BACKENDS.add(backend)
    return "dense"


def _geomloss(x: Tensor, y: Tensor, eps: float, opt: SoundOptions, backend: str) -> Tensor:
    from geomloss import SamplesLoss

    if opt.cost == "sqeuclidean":
        kw: Dict[str, Any] = {"p": 2, "blur": math.sqrt(eps)}
    elif opt.cost == "euclidean":
        kw = {"p": 1, "blur": eps}
    elif backend == "online":
        kw = {"p": 1, "blur": eps, "cost": "Sum(Abs(X-Y))"}
    else:
        kw = {"p": 1, "blur": eps, "cost": lambda a, b: torch.cdist(a, b, p=1)}
    loss = SamplesLoss("sinkhorn", debias=opt.debias, scaling=opt.scaling, backend=backend, **kw)
    return loss(x.contiguous(), y.detach().contiguous())


def sound_sinkhorn(x: Tensor, y: Tensor, eps: float, opt: SoundOptions) -> Tuple[Tensor, Dict[str, Any]]:
    """Sinkhorn divergence between student points ``x [N, D]`` and teacher points ``y [M, D]``.

    Returns the value and a dict of diagnostics (backend, iterations, transport cost...).
    """
    N, M = x.shape[0], y.shape[0]
    backend = opt.backend
    if backend == "auto":
        backend = "dense" if (N * M <= opt.auto_dense_max or opt.gradient == "unrolled") else "online"
    if backend == "multiscale" and x.shape[1] > 3:
        # GeomLoss clusters the points on a grid, which KeOps implements for D <= 3 only
        backend = _fall_back("multiscale", f"it needs points in at most 3 dimensions, got {x.shape[1]}", False)
    if backend in _FAILED_BACKENDS:
        backend = "dense"
    if backend in GEOMLOSS_BACKENDS:
        try:
            value = _geomloss(x, y, eps, opt, backend)
            return value, {"backend": backend, "points": N, "value": float(value.detach())}
        except Exception as err:  # KeOps missing or failing to compile: never crash
            if backend == "tensorized":
                raise
            backend = _fall_back(backend, f"{type(err).__name__}: {err}", True)
    value, stats = _dense(x, y, eps, opt)
    stats.update(backend="dense", points=N, value=float(value.detach()))
    return value, stats
