"""SinKD's Sinkhorn divergence: the published computation ("faithful") and a sound one.

Cui et al., "Sinkhorn Distance Minimization for Knowledge Distillation", LREC-COLING
2024 / IEEE TNNLS 2024. Geometry ("batch-wise reformulation"): each row of the batch
is a point, its probability vector ``softmax(z / T)`` (``[C]``) its coordinates; the
loss transports the N student points onto the N teacher points. For sequence logits
``[B, T, V]`` the points are the unmasked tokens and the vocabulary gives coordinates.

faithful (published code, every constant a parameter)::

    p_s, p_t = softmax(z_s / T), softmax(z_t / T)          # [N, C], T = 2
    W[i, j] = || p_s[i] - p_t[j] ||_p                       # [N, N], p = 1
    K = exp(-W / eps)                                       # eps = 0.1
    repeat n_iters (20): K /= K.sum(1); K /= K.sum(0)       # plain domain, unrolled
    value = scale * sum(K * W)                              # scale 0.001, "sum"

Its marginals are 1 per point (total mass N), the value grows with N, is not zero when
student equals teacher, and underflows in fp16 (computed in fp32 here). With C = 1
(regression, e.g. STS-B) softmax of a single logit is 1, W = 0 and the term is
identically 0: kept on purpose, as published.

sound: see ``kdlab.divergences.ot`` (log-domain, potentials, debiasing, backends).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import torch
from torch import Tensor

from kdlab.divergences import REGISTRY
from kdlab.divergences.base import (
    check_choice,
    check_not_probabilities,
    check_range,
    compute_dtype,
    flatten_inputs,
    no_autocast,
)
from kdlab.divergences.costs import CHUNK_ELEMENTS, lp_distance
from kdlab.errors import ConfigError, ResourceError
from kdlab.terms import LogitTerm

MODES = ("faithful", "sound")
FAITHFUL_ONLY = ("p", "n_iters", "reduction", "memory_limit_gb")
# [N, M] tensors alive at the peak of faithful forward + backward: two per unrolled
# iteration (row- and column-normalised plan, saved for backward), W, exp(-W / eps), P * W
# and gradient and allocator buffers (on CPU: 0-30% above the measured peak)
FAITHFUL_MATRICES_FIXED = 16


def faithful_memory_bytes(N: int, M: int, C: int, n_iters: int, itemsize: int = 4) -> int:
    """Estimated peak memory of faithful forward + backward between ``[N, C]`` and ``[M, C]``.

    ``(2 n_iters + 16)`` N x M matrices (the unrolled iterations are all kept for backward)
    plus the inputs, their gradients and four chunks of the L_p backward.
    """
    chunk = min(CHUNK_ELEMENTS, max(1, N * M * C))
    return itemsize * ((2 * n_iters + FAITHFUL_MATRICES_FIXED) * N * M + 2 * (N + M) * C + 4 * chunk)


def device_memory_bytes(device: torch.device) -> int:
    """Total memory of ``device``: the GPU's, or the machine's physical RAM for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
SOUND_ONLY = ("cost", "debias", "max_iter", "tol", "gradient", "backend", "scaling", "auto_dense_max")


def faithful_sinkhorn(
    x: Tensor, y: Tensor, p: float, epsilon: float, n_iters: int
) -> tuple[Tensor, Tensor]:
    """Published plain-domain Sinkhorn between point sets ``x [N, C]`` and ``y [M, C]``.

    Returns ``(plan [N, M], cost [N, M])``; gradients flow through every iteration.
    """
    W = lp_distance(x, y, p)  # [N, M], chunked backward (no [N, M, C] tensor)
    P = torch.exp(-W / epsilon)
    for _ in range(n_iters):
        P = P / P.sum(dim=1, keepdim=True)
        P = P / P.sum(dim=0, keepdim=True)
    return P, W


@REGISTRY.register("sinkhorn")
class Sinkhorn(LogitTerm):
    """Entropic optimal transport between student and teacher predictions (SinKD).

    Args (both modes):
        mode: "sound" (default; log-domain, see ``kdlab.divergences.ot``) or
            "faithful" (the published computation, module docstring).
        temperature: T of ``softmax(z / T)`` for both sides (published: 2, fixed).
        t2: multiply the value by T^2 (not in the published code).
        epsilon: entropic regularisation, in cost units (published: 0.1).
        scale: factor on the value (default 0.001 faithful = published HEAD; the first
            commit used 0.002, the seq2seq/decoder files 0.0008; default 1.0 sound).
        check_inputs: raise if an input looks like probabilities instead of logits.

    Mode-specific parameters default to None (= the mode's default below); setting one
    that does not apply to the chosen mode is a ConfigError.

    faithful only:
        p: exponent of the L_p cost ``||p_s[i] - p_t[j]||_p`` (default/published 1).
        n_iters: row-then-column normalisations (default/published 20).
        reduction: "sum" over the N x N plan (default/published) or "mean" (sum / N).
        memory_limit_gb: refuse (ResourceError) a problem whose estimated peak memory
            (``faithful_memory_bytes``) is over this many GB; default: the device's total
            memory (GPU memory, or RAM for the CPU).

    sound only (``kdlab.divergences.ot.SoundOptions`` has the defaults):
        cost: "l1" (sum |x - y|, SinKD's geometry), "euclidean" (|x - y|) or
            "sqeuclidean" (|x - y|^2 / 2, GeomLoss's p = 2 convention).
        debias: subtract 0.5 OT(s, s) + 0.5 OT(t, t), so the value is zero when the two
            point sets coincide (Feydy et al. 2019).
        max_iter, tol: stop when the potentials move less than ``tol`` (in cost units),
            after at most ``max_iter`` iterations.
        gradient: "envelope" (differentiate through the converged potentials; cheap,
            exact at convergence) or "unrolled" (through every iteration).
        scaling: GeomLoss epsilon-scaling ratio in (0, 1) for the GeomLoss backends;
            closer to 1 = more iterations, gradients closer to the converged ones.
        backend: "auto", "dense", "online_torch" (row blocks, no N x M matrix), "tensorized",
            "online" (KeOps) or "multiscale"; only "auto" ever falls back (see ``ot``).
        auto_dense_max: "auto" uses the dense path while N * M is at most this.

    ``last_stats`` holds diagnostics of the latest call (iterations, transport cost,
    marginal error, backend used) for logging.
    """

    def __init__(
        self,
        mode: str = "sound",
        temperature: float = 2.0,
        t2: bool = False,
        epsilon: float = 0.1,
        scale: Optional[float] = None,
        p: Optional[float] = None,
        n_iters: Optional[int] = None,
        reduction: Optional[str] = None,
        cost: Optional[str] = None,
        debias: Optional[bool] = None,
        max_iter: Optional[int] = None,
        tol: Optional[float] = None,
        gradient: Optional[str] = None,
        backend: Optional[str] = None,
        scaling: Optional[float] = None,
        auto_dense_max: Optional[int] = None,
        memory_limit_gb: Optional[float] = None,
        check_inputs: bool = False,
    ) -> None:
        super().__init__()
        self.mode = check_choice("mode", mode, MODES)
        self.temperature = check_range("temperature", temperature, 0.0, low_open=True)
        self.t2 = bool(t2)
        self.epsilon = check_range("epsilon", epsilon, 0.0, low_open=True)
        self.scale = check_range("scale", 1.0 if scale is None else scale, 0.0)
        self.check_inputs = bool(check_inputs)
        self.last_stats: Dict[str, Any] = {}
        given = {k: v for k, v in locals().items() if k in FAITHFUL_ONLY + SOUND_ONLY and v is not None}
        other = SOUND_ONLY if self.mode == "faithful" else FAITHFUL_ONLY
        wrong = [k for k in other if k in given]
        if wrong:
            raise ConfigError(
                f"sinkhorn parameter(s) {', '.join(wrong)} do not apply to mode={self.mode!r}; "
                f"{self.mode} mode takes: {', '.join(FAITHFUL_ONLY if self.mode == 'faithful' else SOUND_ONLY)}"
            )
        if self.mode == "faithful":
            self.scale = check_range("scale", 0.001 if scale is None else scale, 0.0)
            self.p = check_range("p", 1.0 if p is None else p, 1.0)
            self.n_iters = int(check_range("n_iters", 20 if n_iters is None else n_iters, 0))
            self.reduction = check_choice("reduction", reduction or "sum", ("sum", "mean"))
            self.memory_limit_gb = (None if memory_limit_gb is None
                                    else check_range("memory_limit_gb", memory_limit_gb, 0.0, low_open=True))
        else:
            from kdlab.divergences.ot import SoundOptions

            self.sound = SoundOptions(**{k: v for k, v in given.items() if k in SOUND_ONLY})

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        s, t, _ = flatten_inputs(student_logits, teacher_logits, mask)
        if self.check_inputs:
            check_not_probabilities(s, "student_logits")
            check_not_probabilities(t, "teacher_logits")
        T = check_range("temperature", self.temperature, 0.0, low_open=True)
        if s.shape[0] == 0:
            self.last_stats = {"points": 0}
            return s.sum() * 0.0
        with no_autocast(s):
            x = torch.softmax(compute_dtype(s) / T, dim=-1)  # [N, C] student points
            y = torch.softmax(compute_dtype(t) / T, dim=-1)  # [N, C] teacher points
            out = self.transport(x, y, on_simplex=True)
            if self.t2:
                out = out * T**2
        return out

    def transport(self, x: Tensor, y: Tensor, on_simplex: bool = False) -> Tensor:
        """The scaled value between point clouds ``x [N, D]`` (student) and ``y [M, D]``.

        Coordinates are used as given (no softmax, no temperature); ``y`` is detached.
        ``on_simplex``: the points are probability vectors, so the sound mode knows a bound
        on their costs without reading them (``kdlab.divergences.ot.SIMPLEX_COST_BOUND``).
        """
        y = y.detach()
        if self.mode == "faithful":
            return self._faithful(x, y)
        from kdlab.divergences.ot import SIMPLEX_COST_BOUND, sound_sinkhorn

        bound = SIMPLEX_COST_BOUND[self.sound.cost] if on_simplex else None
        out, self.last_stats = sound_sinkhorn(x, y, self.epsilon, self.sound, bound)
        return self.scale * out

    def _check_faithful_memory(self, x: Tensor, y: Tensor) -> None:
        need = faithful_memory_bytes(x.shape[0], y.shape[0], x.shape[1], self.n_iters, x.element_size())
        limit = (device_memory_bytes(x.device) if self.memory_limit_gb is None
                 else int(self.memory_limit_gb * 2**30))
        if need > limit:
            raise ResourceError(
                f"sinkhorn mode=faithful between {x.shape[0]} and {y.shape[0]} points of {x.shape[1]} coordinates "
                f"needs about {need / 2**30:.1f} GB ({self.n_iters} unrolled iterations over {x.shape[0]} x "
                f"{y.shape[0]} matrices), over the {limit / 2**30:.1f} GB limit (memory_limit_gb); use fewer "
                "points per batch, fewer n_iters, or mode=sound (memory-bounded backends)")

    def _faithful(self, x: Tensor, y: Tensor) -> Tensor:
        self._check_faithful_memory(x, y)
        P, W = faithful_sinkhorn(x, y, self.p, self.epsilon, self.n_iters)
        total = (P * W).sum()
        if self.reduction == "mean":
            total = total / x.shape[0]
        with torch.no_grad():
            self.last_stats = {  # on the device, read when logged
                "points": x.shape[0],
                "iterations": self.n_iters,
                "transport_cost": total.detach(),
                "row_marginal_error": (P.sum(1) - 1).abs().max(),
            }
        return self.scale * total

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, temperature={self.temperature}, epsilon={self.epsilon}"
