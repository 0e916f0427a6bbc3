"""The f-divergence family between teacher ``p = softmax(z_t / T)`` and student ``q``.

``D_f(p || q) = sum_c q_c f(p_c / q_c)`` for convex ``f`` with ``f(1) = 0``; the teacher
is the first argument (the reference) unless a docstring says otherwise. Each named
member below is computed from log-probabilities in a closed form that stays finite in
float32; ``fdiv`` evaluates any generator ``f`` directly (tests show every named member
equal to it). Generators, with ``u = p / q``:

=============  ==========================================  ============================
name           f(u)                                        value
=============  ==========================================  ============================
kl             u log u                                     KL(p || q)
rkl            -log u                                      KL(q || p)
skl            (u - 1) log u                               KL(p || q) + KL(q || p)
js (beta)      b u log u - (b u + 1 - b) log(b u + 1 - b)  b KL(p || m) + (1-b) KL(q || m)
tvd            |u - 1| / 2                                 sum |p - q| / 2
hellinger      (sqrt(u) - 1)^2 / 2                         1 - sum sqrt(p q)
pearson        (u - 1)^2                                   sum (p - q)^2 / q
neyman         (1 - u)^2 / u                               sum (p - q)^2 / p
alpha (a)      (u^a - 1 - a (u - 1)) / (a (a - 1))         Amari alpha-divergence
skew_kl (l)    u log(u / (l u + 1 - l))                    KL(p || l p + (1 - l) q)
skew_rkl (l)   -log((1 - l) u + l)                         KL(q || (1 - l) p + l q)
=============  ==========================================  ============================
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from kdlab.divergences import REGISTRY
from kdlab.divergences.base import LOG_CAP, LogitDivergence, check_choice, check_range
from kdlab.divergences.kl import kl_terms
from kdlab.errors import ConfigError


def log_mix(log_a: Tensor, log_b: Tensor, w: float) -> Tensor:
    """``log(w a + (1 - w) b)`` from log-probabilities, for 0 < w < 1."""
    return torch.logaddexp(log_a + math.log(w), log_b + math.log1p(-w))


def alpha_terms(log_p: Tensor, log_q: Tensor, alpha: float, cap: float = LOG_CAP) -> Tuple[Tensor, Tensor]:
    """Amari alpha-divergence per row and its ``dD/dlog q``, ``alpha`` not in {0, 1}.

    ``sum_c (p^a q^(1-a) - a p - (1-a) q) / (a (a - 1))``: every class term has the sign
    of ``a (a - 1)``, so the sum is non-negative up to rounding. ``dD/dlog q`` is
    ``-p^a q^(1-a) / a`` up to a multiple of q; capped terms have no gradient.
    """
    exponent = alpha * log_p + (1 - alpha) * log_q
    mixed = torch.exp(exponent.clamp_max(cap))
    terms = mixed - alpha * log_p.exp() - (1 - alpha) * log_q.exp()
    values = (terms.sum(-1) / (alpha * (alpha - 1))).clamp_min(0.0)
    return values, torch.where(exponent < cap, mixed, 0.0) / -alpha


@REGISTRY.register("js")
class GeneralizedJSD(LogitDivergence):
    """Generalized Jensen-Shannon divergence with mixture weight ``beta`` (GKD, TRL).

    ``m = beta p + (1 - beta) q``; ``JSD_beta = beta KL(p || m) + (1 - beta) KL(q || m)``,
    gradient through ``m``. ``beta = 0.5`` is the Jensen-Shannon divergence (Lin 1991),
    bounded by log 2. As beta -> 0, ``JSD_beta / beta -> KL(p || q)``; as beta -> 1,
    ``JSD_beta / (1 - beta) -> KL(q || p)``. At exactly 0 and 1 the formula vanishes, so
    (as in TRL's GKD trainer) ``beta = 0`` is defined as KL(p || q) and ``beta = 1`` as
    KL(q || p). Agarwal et al., "On-Policy Distillation of Language Models", ICLR 2024.
    """

    example_params = {"beta": 0.3}

    def __init__(self, beta: float = 0.5, **kw) -> None:
        super().__init__(**kw)
        self.beta = check_range("beta", beta, 0.0, 1.0)

    fused = True

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return self.value_and_grad(log_q, log_p)[0]

    def value_and_grad(self, log_q: Tensor, log_p: Tensor) -> Tuple[Tensor, Tensor]:
        b = self.beta
        if b == 0.0:
            return kl_terms(log_p, log_q).clamp_min(0.0), -log_p.exp()
        q = log_q.exp()
        if b == 1.0:
            return kl_terms(log_q, log_p).clamp_min(0.0), q * (log_q - log_p)
        log_m = log_mix(log_p, log_q, b)
        value = (b * kl_terms(log_p, log_m) + (1 - b) * (q * (log_q - log_m)).sum(-1)).clamp_min(0.0)
        return value, (1 - b) * q * (log_q - log_m)


@REGISTRY.register("tvd")
class TotalVariation(LogitDivergence):
    """Total variation distance ``sum_c |p_c - q_c| / 2`` in [0, 1] (symmetric).

    Summed over classes, not averaged (the published SinKD baseline divides by C).
    """

    fused = True

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)

    def value_and_grad(self, log_q: Tensor, log_p: Tensor) -> Tuple[Tensor, Tensor]:
        q = log_q.exp()
        diff = log_p.exp() - q
        return 0.5 * diff.abs().sum(-1), -0.5 * q * diff.sign()


@REGISTRY.register("alpha")
class AlphaDivergence(LogitDivergence):
    """Amari alpha-divergence ``(sum_c p^a q^(1-a) - 1) / (a (a - 1))``, teacher p first.

    Amari, "Differential-geometrical methods in statistics", 1985 (Cichocki-Amari
    parametrisation). ``alpha -> 1`` gives KL(p || q), ``alpha -> 0`` KL(q || p) (used at
    exactly 1 and 0); ``alpha = 0.5`` is 4 x squared Hellinger, ``alpha = 2`` half the
    Pearson chi^2, ``alpha = -1`` half the Neyman chi^2. For alpha outside [0, 1] each
    class term is capped (see ``kdlab.divergences.base.LOG_CAP``).
    """

    example_params = {"alpha": 0.7}

    def __init__(self, alpha: float = 0.5, **kw) -> None:
        super().__init__(**kw)
        self.alpha = check_range("alpha", alpha, -100.0, 100.0)

    fused = True

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return self.value_and_grad(log_q, log_p)[0]

    def value_and_grad(self, log_q: Tensor, log_p: Tensor) -> Tuple[Tensor, Tensor]:
        if self.alpha == 1.0:
            return kl_terms(log_p, log_q).clamp_min(0.0), -log_p.exp()
        if self.alpha == 0.0:
            return kl_terms(log_q, log_p).clamp_min(0.0), log_q.exp() * (log_q - log_p)
        return alpha_terms(log_p, log_q, self.alpha, self.log_cap)


@REGISTRY.register("hellinger")
class SquaredHellinger(LogitDivergence):
    """Squared Hellinger distance ``1 - sum_c sqrt(p_c q_c) = sum_c (sqrt p_c - sqrt q_c)^2 / 2``.

    In [0, 1], symmetric. Hellinger 1909. (Some authors omit the 1/2.)
    """

    fused = True

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return self.value_and_grad(log_q, log_p)[0]

    def value_and_grad(self, log_q: Tensor, log_p: Tensor) -> Tuple[Tensor, Tensor]:
        value, h = alpha_terms(log_p, log_q, 0.5)
        return 0.25 * value, 0.25 * h


@REGISTRY.register("pearson")
class PearsonChi2(LogitDivergence):
    """Pearson chi^2 ``sum_c (p_c - q_c)^2 / q_c``: the student q is in the denominator.

    Pearson 1900. Unbounded; each class term is capped (``kdlab.divergences.base.LOG_CAP``).
    """

    fused = True

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return self.value_and_grad(log_q, log_p)[0]

    def value_and_grad(self, log_q: Tensor, log_p: Tensor) -> Tuple[Tensor, Tensor]:
        value, h = alpha_terms(log_p, log_q, 2.0, self.log_cap)
        return 2.0 * value, 2.0 * h


@REGISTRY.register("neyman")
class NeymanChi2(LogitDivergence):
    """Neyman chi^2 ``sum_c (p_c - q_c)^2 / p_c``: the teacher p is in the denominator.

    Neyman 1949. Unbounded; each class term is capped (``kdlab.divergences.base.LOG_CAP``).
    """

    fused = True

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return self.value_and_grad(log_q, log_p)[0]

    def value_and_grad(self, log_q: Tensor, log_p: Tensor) -> Tuple[Tensor, Tensor]:
        value, h = alpha_terms(log_p, log_q, -1.0, self.log_cap)
        return 2.0 * value, 2.0 * h


@REGISTRY.register("skew_kl")
class SkewKL(LogitDivergence):
    """Skew KL ``KL(p || skew p + (1 - skew) q)`` (DistiLLM, Ko et al., ICML 2024).

    The student is mixed into the second argument; gradient flows through q inside the
    mixture. DistiLLM's loss ``-sum p log m`` differs from this by the teacher entropy
    (same gradient); this form is zero when q = p. ``skew = 0`` is KL(p || q).
    DistiLLM's default skew is 0.1 at T = 1.
    """

    example_params = {"skew": 0.1}

    def __init__(self, skew: float = 0.1, **kw) -> None:
        super().__init__(**kw)
        self.skew = check_range("skew", skew, 0.0, 1.0, high_open=True)

    fused = True

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return self.value_and_grad(log_q, log_p)[0]

    def value_and_grad(self, log_q: Tensor, log_p: Tensor) -> Tuple[Tensor, Tensor]:
        log_m = log_mix(log_p, log_q, self.skew) if self.skew > 0 else log_q
        p = log_p.exp()
        value = (p * (log_p - log_m)).sum(-1).clamp_min(0.0)
        return value, -(1 - self.skew) * torch.exp(log_p + log_q - log_m)


@REGISTRY.register("skew_rkl")
class SkewReverseKL(LogitDivergence):
    """Skew reverse KL ``KL(q || (1 - skew) p + skew q)`` (DistiLLM, Ko et al., ICML 2024).

    ``skew = 0`` is KL(q || p). DistiLLM's default skew is 0.1 at T = 1.
    """

    example_params = {"skew": 0.1}

    def __init__(self, skew: float = 0.1, **kw) -> None:
        super().__init__(**kw)
        self.skew = check_range("skew", skew, 0.0, 1.0, high_open=True)

    fused = True

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return self.value_and_grad(log_q, log_p)[0]

    def value_and_grad(self, log_q: Tensor, log_p: Tensor) -> Tuple[Tensor, Tensor]:
        log_m = log_mix(log_q, log_p, self.skew) if self.skew > 0 else log_p
        q_log_ratio = log_q.exp() * (log_q - log_m)
        value = q_log_ratio.sum(-1).clamp_min(0.0)
        return value, q_log_ratio - self.skew * torch.exp(2 * log_q - log_m)


def _xlogx(u: Tensor) -> Tensor:
    return torch.special.xlogy(u, u)


Generator = Callable[[Tensor], Tensor]

# name -> factory(parameter) -> f(u); the parameter is beta / alpha / skew where used.
GENERATORS: Dict[str, Callable[[float], Generator]] = {
    "kl": lambda _: _xlogx,
    "rkl": lambda _: lambda u: -torch.log(u),
    "skl": lambda _: lambda u: (u - 1) * torch.log(u),
    "js": lambda b: lambda u: b * _xlogx(u) - _xlogx(b * u + 1 - b),
    "tvd": lambda _: lambda u: 0.5 * (u - 1).abs(),
    "hellinger": lambda _: lambda u: 0.5 * (u.sqrt() - 1) ** 2,
    "pearson": lambda _: lambda u: (u - 1) ** 2,
    "neyman": lambda _: lambda u: (1 - u) ** 2 / u,
    "alpha": lambda a: lambda u: (u**a - 1 - a * (u - 1)) / (a * (a - 1)),
    "skew_kl": lambda s: lambda u: u * (torch.log(u) - torch.log(s * u + 1 - s)),
    "skew_rkl": lambda s: lambda u: -torch.log((1 - s) * u + s),
}


# parametric generators: (low, high, default) of their parameter, high excluded.
PARAM_RANGES = {
    "js": (0.0, 1.0, 0.5),
    "alpha": (-100.0, 100.0, 0.5),
    "skew_kl": (0.0, 1.0, 0.1),
    "skew_rkl": (0.0, 1.0, 0.1),
}


@REGISTRY.register("fdiv")
class FDivergence(LogitDivergence):
    """Generic f-divergence ``D_f(p || q) = sum_c q_c f(p_c / q_c)`` from a generator f.

    Args:
        generator: a name from ``GENERATORS`` (see the module table) or, from Python, any
            callable ``f(u)`` acting elementwise on a tensor, convex with ``f(1) = 0``.
        param: beta / alpha / skew of the parametric generators ("js", "alpha",
            "skew_kl", "skew_rkl"); must be None for the others.
        max_log_ratio: ``log(p / q)`` is clipped to +-this before ``f`` is applied, so the
            ratio stays finite in float32 (the named members do not need this).

    For experimenting with new generators and for checking the named members; the named
    members are faster and exact for any ratio.
    """

    example_params = {"generator": "hellinger"}

    def __init__(
        self,
        generator: Union[str, Generator] = "kl",
        param: Optional[float] = None,
        max_log_ratio: float = 30.0,
        **kw,
    ) -> None:
        super().__init__(**kw)
        self.max_log_ratio = check_range("max_log_ratio", max_log_ratio, 0.0, low_open=True)
        if callable(generator):
            if param is not None:
                raise ConfigError("param must be None when generator is a callable")
            self.f: Generator = generator
            return
        check_choice("generator", generator, sorted(GENERATORS))
        if generator not in PARAM_RANGES:
            if param is not None:
                raise ConfigError(f"generator {generator!r} takes no param, got param={param!r}")
            self.f = GENERATORS[generator](0.0)
            return
        low, high, default = PARAM_RANGES[generator]
        param = check_range("param", default if param is None else param, low, high,
                            low_open=generator == "js", high_open=True)
        if generator == "alpha" and param in (0.0, 1.0):
            raise ConfigError(
                f"param must not be {param} for generator 'alpha' (those limits are 'rkl' and 'kl')"
            )
        self.f = GENERATORS[generator](param)

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        u = torch.exp((log_p - log_q).clamp(-self.max_log_ratio, self.max_log_ratio))
        return (log_q.exp() * self.f(u)).sum(-1)
