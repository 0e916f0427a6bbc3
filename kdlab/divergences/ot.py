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

Host synchronisation: the loop decides on the device. Each iteration computes the change
and a "converged" flag there; once the flag is set the potentials are frozen
(``torch.where``), so the result, the iteration count and the last change are exactly
those of a loop that stops at the converging iteration. The host reads the flag only
every ``CHECK_EVERY`` iterations (running at most ``CHECK_EVERY - 1`` frozen iterations
past convergence), every iteration for problems over ``CHECK_EVERY_MAX_COSTS`` costs
(where an iteration costs more than a read), and never with ``tol=0`` (a fixed
``max_iter`` iterations, no read at all). The plain-kernel test below needs no read when the points are probability vectors
(``SIMPLEX_COST_BOUND``); the diagnostics (``stats``) stay on the device until logged.

The potentials are kept in the log domain. When the whole kernel ``exp(-C / eps)`` is
representable (``max C / eps <= 30``, always true for SinKD's costs <= 2 and eps = 0.1)
each update is a matrix-vector product with that kernel, which is exact there and much
faster than a log-sum-exp over the matrix; otherwise the updates use log-sum-exp.

Gradients: "envelope" runs the loop without autograd, then takes one last update with
autograd on (teacher side detached), whose gradient is the envelope-theorem gradient
``dOT/dC = P`` at convergence (as GeomLoss does); "unrolled" differentiates through
every iteration (memory grows with the iteration count).

Backends: one skeleton (``_divergence``) serves the dense solver (``DensePair``, the
N x M cost matrix in memory) and the row-block one (``ot_online.OnlinePair``); GeomLoss
runs the others. ``choose_backend`` decides: only "auto" ever falls back, and only when
KeOps is not installed or failed its probe (``keops_probe``: a KeOps crash is a
segmentation fault, which no ``except`` can catch, so it is tried in a child process).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Set, Tuple

import torch
from torch import Tensor

from kdlab.divergences import keops_probe
from kdlab.divergences.base import check_choice, check_range
from kdlab.divergences.costs import cost_matrix
from kdlab.errors import ConfigError, ResourceError

COSTS = ("l1", "euclidean", "sqeuclidean")
BACKENDS = ("auto", "dense", "online_torch", "tensorized", "online", "multiscale")
GEOMLOSS_BACKENDS = ("tensorized", "online", "multiscale")
KEOPS_BACKENDS = ("online", "multiscale")
PLAIN_KERNEL_MAX = 30.0  # max C / eps for which exp(-C / eps) is used directly
# Iterations between host reads of the convergence flag: fewer reads, at the price of at
# most CHECK_EVERY - 1 frozen iterations past convergence per problem.
CHECK_EVERY = 5
# Past this many costs (N x M) an iteration outweighs a read: the flag is read every iteration.
CHECK_EVERY_MAX_COSTS = 2**22
# The largest cost between probability vectors (norms |x|_1 = 1 and |x|_2 <= 1, triangle
# inequality), SinKD's points: a bound known without reading the points.
SIMPLEX_COST_BOUND = {"l1": 2.0, "euclidean": 2.0, "sqeuclidean": 2.0}


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
        if self.gradient == "unrolled" and self.backend not in ("dense", "auto"):
            raise ConfigError(
                f"gradient='unrolled' needs backend 'dense' or 'auto', got backend={self.backend!r} "
                "(the other backends differentiate through the converged potentials only)"
            )
        if self.backend in GEOMLOSS_BACKENDS:  # checked when built, before any model is loaded
            needed = ("geomloss",) if self.backend == "tensorized" else ("pykeops", "geomloss")
            missing = [m for m in keops_probe.missing_packages() if m in needed]
            if missing:
                raise ConfigError(f"Sinkhorn backend={self.backend!r} needs {' and '.join(missing)} "
                                  f"(pip install {' '.join(missing)}), or use backend=auto")
        if self.backend == "multiscale" and self.cost == "l1":
            raise ConfigError("backend='multiscale' supports cost 'euclidean' or 'sqeuclidean', not 'l1'")


def softmin(eps: float, C: Tensor, h: Tensor, dim: int) -> Tensor:
    """``-eps * logsumexp(h - C / eps)`` along ``dim`` (h broadcast along the other)."""
    if dim == 1:
        return -eps * torch.logsumexp(h[None, :] - C / eps, dim=1)
    return -eps * torch.logsumexp(h[:, None] - C / eps, dim=0)


# (state) -> (next state, change: a 0-dim tensor, cost units)
Step = Callable[[Tuple[Tensor, ...]], Tuple[Tuple[Tensor, ...], Tensor]]


def iterate(step: Step, state: Tuple[Tensor, ...], max_iter: int, tol: float) -> Tuple[Tuple[Tensor, ...], Tensor, Tensor]:
    """``(state, iterations, last change)`` of ``step`` repeated until its change is below
    ``tol``, at most ``max_iter`` times, deciding on the device (module docstring): the
    iteration count and change are 0-dim tensors. ``state[0] [N]`` and ``state[1] [M]``
    size the problem (``CHECK_EVERY_MAX_COSTS``)."""
    every = CHECK_EVERY if state[0].shape[0] * state[1].shape[0] <= CHECK_EVERY_MAX_COSTS else 1
    done = torch.zeros((), dtype=torch.bool, device=state[0].device)
    iters = torch.zeros((), dtype=torch.long, device=state[0].device)
    change = torch.full((), math.inf, dtype=state[0].dtype, device=state[0].device)
    for i in range(1, max_iter + 1):
        new, step_change = step(state)
        state = tuple(torch.where(done, old, n) for old, n in zip(state, new, strict=True))
        change = torch.where(done, change, step_change.detach())
        iters = iters + (~done)
        done = done | (step_change.detach() < tol)
        if tol > 0 and i % every == 0 and i < max_iter and bool(done):  # the one host read
            break
    return state, iters, change


def plain_kernel(C: Tensor, eps: float, bound: Optional[float]) -> bool:
    """Whether ``exp(-C / eps)`` is representable (``max C / eps <= PLAIN_KERNEL_MAX``):
    from ``bound`` (an upper bound on every cost) when it decides, else from ``C`` (a read)."""
    if bound is not None and bound / eps <= PLAIN_KERNEL_MAX:
        return True
    return float(C.detach().max()) / eps <= PLAIN_KERNEL_MAX


def solve(C: Tensor, eps: float, max_iter: int, tol: float, symmetric: bool,
          bound: Optional[float] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sinkhorn potentials ``(f [N], g [M], iterations, last change)`` for uniform weights
    (the last two 0-dim tensors, on the device). ``bound``: an upper bound on the costs,
    if known (``SIMPLEX_COST_BOUND``).

    ``symmetric``: C is the cost of a cloud with itself; averaged updates
    ``f <- (f + T(f)) / 2`` converge in a few steps and ``g = f``.
    Differentiable if called with autograd on (unrolled gradient).
    """
    if plain_kernel(C, eps, bound):
        return _solve_kernel(torch.exp(-C / eps), eps, max_iter, tol, symmetric)
    return _solve_lse(C, eps, max_iter, tol, symmetric)


def _solve_kernel(K: Tensor, eps: float, max_iter: int, tol: float, symmetric: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Updates as matrix-vector products with ``K = exp(-C / eps)`` ``[N, M]``.

    Scalings ``u = a exp(f / eps)``, ``v = b exp(g / eps)``, so that ``P = diag(u) K diag(v)``.
    """
    N, M = K.shape
    a, b = 1.0 / N, 1.0 / M

    def step(state: Tuple[Tensor, ...]) -> Tuple[Tuple[Tensor, ...], Tensor]:
        u, v = state
        if symmetric:  # f <- (f + T(f)) / 2
            u_new = torch.sqrt(u * a / (K @ u))
            return (u_new, v), eps * (u_new / u).detach().log().abs().max()
        u = a / (K @ v)
        v_new = b / (K.T @ u)
        return (u, v_new), eps * (v_new / v).detach().log().abs().max()

    (u, v), iters, change = iterate(step, (K.new_full((N,), a), K.new_full((M,), b)), max_iter, tol)  # f = g = 0
    f = eps * torch.log(u / a)
    return (f, f, iters, change) if symmetric else (f, eps * torch.log(v / b), iters, change)



def _solve_lse(C: Tensor, eps: float, max_iter: int, tol: float, symmetric: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Updates in the log domain, ``f_i = -eps logsumexp_j(log b_j + (g_j - C_ij) / eps)``."""
    return solve_log_domain(lambda h: softmin(eps, C, h, dim=1), lambda h: softmin(eps, C, h, dim=0),
                            C.new_zeros(C.shape[0]), C.new_zeros(C.shape[1]), eps, max_iter, tol, symmetric)


def solve_log_domain(rows: Callable[[Tensor], Tensor], cols: Callable[[Tensor], Tensor], f: Tensor, g: Tensor,
                     eps: float, max_iter: int, tol: float, symmetric: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The log-domain Sinkhorn loop, from potentials ``f = 0 [N]``, ``g = 0 [M]``.

    ``rows(h) = -eps logsumexp_j(h_j - C_ij / eps)`` ``[N]`` and ``cols`` the same over i
    ``[M]``: a dense matrix or row blocks (``ot_online``) serve the same loop.
    """
    log_a, log_b = -math.log(f.shape[0]), -math.log(g.shape[0])

    def step(state: Tuple[Tensor, ...]) -> Tuple[Tuple[Tensor, ...], Tensor]:
        f, g = state
        if symmetric:
            f_new = 0.5 * (f + rows(f / eps + log_a))
            return (f_new, f_new), (f_new - f).detach().abs().max()
        f = rows(g / eps + log_b)
        g_new = cols(f / eps + log_a)
        return (f, g_new), (g_new - g).detach().abs().max()

    (f, g), iters, change = iterate(step, (f, g), max_iter, tol)
    return f, g, iters, change


class DensePair:
    """Sinkhorn between uniform clouds ``u [N, D]`` and ``v [M, D]`` on the full cost matrix."""

    def __init__(self, u: Tensor, v: Tensor, eps: float, cost: str, bound: Optional[float] = None) -> None:
        """``bound``: an upper bound on every cost, if known without reading the points."""
        self.C = cost_matrix(u, v, cost)  # [N, M], differentiable in u (and v if it requires grad)
        self.eps, self.bound = eps, bound
        self.log_a, self.log_b = -math.log(u.shape[0]), -math.log(v.shape[0])

    def solve(self, max_iter: int, tol: float, symmetric: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Potentials; differentiable through every iteration when autograd is on (unrolled)."""
        C = self.C if torch.is_grad_enabled() else self.C.detach()
        return solve(C, self.eps, max_iter, tol, symmetric, self.bound)

    def update(self, h: Tensor) -> Tensor:
        """The last f-update with autograd on (envelope gradient ``dOT/dC = P``)."""
        return softmin(self.eps, self.C, h.detach(), dim=1)

    def stats(self, f: Tensor, g: Tensor) -> Dict[str, Any]:
        """``<P, C>`` and the row-marginal error of the plan (0-dim tensors, on the device)."""
        C = self.C.detach()
        P = ((f[:, None] + g[None, :] - C) / self.eps + self.log_a + self.log_b).exp()
        return {"transport_cost": (P * C).sum(), "marginal_error": (P.sum(1) - math.exp(self.log_a)).abs().sum()}


def _divergence(x: Tensor, y: Tensor, eps: float, opt: SoundOptions, pair: Callable[..., Any],
                bound: Optional[float] = None) -> Tuple[Tensor, Dict[str, Any]]:
    """OT_eps(x, y), minus the debiasing terms, with ``pair`` = DensePair or OnlinePair;
    ``bound`` an upper bound on the costs, if known. Diagnostics stay on the device."""
    y = y.detach()
    log_a, log_b = -math.log(x.shape[0]), -math.log(y.shape[0])
    unrolled = opt.gradient == "unrolled" and torch.is_grad_enabled()  # DensePair only
    xy = pair(x, y, eps, opt.cost, bound)
    with torch.set_grad_enabled(unrolled):
        f, g, iters, change = xy.solve(opt.max_iter, opt.tol, False)
    if not unrolled:
        f = xy.update(g / eps + log_b)
    value = f.mean() + g.mean()
    stats: Dict[str, Any] = {"iterations": iters, "converged": change < opt.tol}
    if opt.debias:
        with torch.no_grad():
            g_bb = pair(y, y, eps, opt.cost, bound).solve(opt.max_iter, opt.tol, True)[0]
        if unrolled:
            f_aa = pair(x, x, eps, opt.cost, bound).solve(opt.max_iter, opt.tol, True)[0]
        else:
            # one-sided cost: the gradient of <a, f_aa> is half that of OT(a, a)
            xx = pair(x, x.detach(), eps, opt.cost, bound)
            with torch.no_grad():
                f_aa = xx.solve(opt.max_iter, opt.tol, True)[0]
            f_aa = xx.update(f_aa / eps + log_a)
        value = value - f_aa.mean() - g_bb.mean()
    with torch.no_grad():
        stats.update(xy.stats(f.detach(), g.detach()))
    return value, stats


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


_WARNED: Set[str] = set()


def keops_unusable(device: torch.device) -> Optional[str]:
    """Why KeOps cannot serve on ``device`` (None: it passed its probe)."""
    missing = keops_probe.missing_packages()
    if missing:
        return f"{' and '.join(missing)} not installed"
    verdict = keops_probe.keops_verdict(device)
    if verdict.ok:
        return None
    where = f"; verdict cached in {verdict.path}, delete it to probe again" if verdict.path else ""
    return f"KeOps failed its probe on {device} ({verdict.reason}{where})"


def choose_backend(opt: SoundOptions, N: int, M: int, D: int, device: torch.device) -> str:
    """The backend that will run. Only "auto" falls back; an explicit backend that cannot run raises."""
    backend = opt.backend
    if backend == "auto":
        if N * M <= opt.auto_dense_max or opt.gradient == "unrolled":
            return "dense"
        why = keops_unusable(device)
        if why is None:
            return "online"
        if why not in _WARNED:
            _WARNED.add(why)
            warnings.warn(f"Sinkhorn backend 'auto': N x M = {N} x {M} is over auto_dense_max and {why}; "
                          "using the memory-bounded PyTorch backend 'online_torch'", RuntimeWarning, stacklevel=4)
        return "online_torch"
    if backend == "multiscale" and D > 3:
        # GeomLoss clusters the points on a grid, which KeOps implements for D <= 3 only
        raise ConfigError(f"Sinkhorn backend='multiscale' needs points in at most 3 dimensions, got {D}; "
                          "use backend=auto (or online_torch)")
    if backend in KEOPS_BACKENDS:
        why = keops_unusable(device)
        if why is not None:
            raise ResourceError(f"Sinkhorn backend={backend!r} cannot run: {why}; "
                                "use backend=auto or online_torch (memory-bounded PyTorch, no KeOps)")
    return backend


def sound_sinkhorn(x: Tensor, y: Tensor, eps: float, opt: SoundOptions,
                   bound: Optional[float] = None) -> Tuple[Tensor, Dict[str, Any]]:
    """Sinkhorn divergence between student points ``x [N, D]`` and teacher points ``y [M, D]``;
    ``bound``: an upper bound on every cost, if known (``SIMPLEX_COST_BOUND[opt.cost]`` for
    probability vectors), which spares a read of the points.

    Returns the value and a dict of diagnostics (backend, iterations, transport cost...);
    numeric ones are 0-dim tensors on the device, read when logged.
    """
    N, M = x.shape[0], y.shape[0]
    backend = choose_backend(opt, N, M, x.shape[1], x.device)
    if backend in GEOMLOSS_BACKENDS:
        value = _geomloss(x, y, eps, opt, backend)
        return value, {"backend": backend, "points": N, "value": value.detach()}
    if backend == "online_torch":
        from kdlab.divergences.ot_online import OnlinePair

        value, stats = _divergence(x, y, eps, opt, OnlinePair, bound)
    else:
        value, stats = _divergence(x, y, eps, opt, DensePair, bound)
    stats.update(backend=backend, points=N, value=value.detach())
    return value, stats
