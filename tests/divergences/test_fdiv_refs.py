"""f-divergences against SciPy / NumPy references, hand values and family limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from divtools import logits
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from kdlab.divergences import get

Z_S, Z_T = logits(24, 5, seed=11), logits(24, 5, seed=12, scale=3.0)
P = torch.softmax(Z_T / 1.5, -1).numpy()  # teacher
Q = torch.softmax(Z_S / 1.5, -1).numpy()  # student


def value(name: str, **params) -> float:
    return float(get(name, temperature=1.5, **params)(Z_S, Z_T))


def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return rel_entr(a, b).sum(-1)


REFERENCES = {
    ("kl", ()): lambda: kl(P, Q),
    ("rkl", ()): lambda: kl(Q, P),
    ("skl", ()): lambda: kl(P, Q) + kl(Q, P),
    ("js", ()): lambda: jensenshannon(P, Q, axis=-1) ** 2,
    ("js", (("beta", 0.2),)): lambda: 0.2 * kl(P, 0.2 * P + 0.8 * Q) + 0.8 * kl(Q, 0.2 * P + 0.8 * Q),
    ("tvd", ()): lambda: 0.5 * np.abs(P - Q).sum(-1),
    ("hellinger", ()): lambda: 0.5 * ((np.sqrt(P) - np.sqrt(Q)) ** 2).sum(-1),
    ("pearson", ()): lambda: ((P - Q) ** 2 / Q).sum(-1),
    ("neyman", ()): lambda: ((P - Q) ** 2 / P).sum(-1),
    ("alpha", (("alpha", 0.3),)): lambda: ((P**0.3 * Q**0.7).sum(-1) - 1) / (0.3 * -0.7),
    ("alpha", (("alpha", 3.0),)): lambda: ((P**3 * Q**-2).sum(-1) - 1) / 6,
    ("skew_kl", (("skew", 0.1),)): lambda: kl(P, 0.1 * P + 0.9 * Q),
    ("skew_rkl", (("skew", 0.3),)): lambda: kl(Q, 0.7 * P + 0.3 * Q),
    ("kd", ()): lambda: -(P * np.log(Q)).sum(-1),
}


@pytest.mark.parametrize("key", REFERENCES, ids=lambda k: f"{k[0]}{dict(k[1]) or ''}")
def test_against_scipy_numpy(key) -> None:
    name, params = key
    np.testing.assert_allclose(value(name, **dict(params)), REFERENCES[key]().mean(), rtol=1e-9)


def two_class(q0: float) -> torch.Tensor:
    return torch.tensor([[math.log(q0), math.log(1 - q0)]], dtype=torch.float64)


@pytest.mark.parametrize(
    "name,expected",
    [
        # teacher (1/2, 1/2), student (0.8, 0.2), by hand
        ("tvd", 0.3),
        ("hellinger", 1 - math.sqrt(0.4) - math.sqrt(0.1)),
        ("pearson", 0.09 / 0.8 + 0.09 / 0.2),
        ("neyman", 0.09 / 0.5 * 2),
        ("kl", 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)),
        ("rkl", 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)),
        ("js", 0.5 * (0.5 * math.log(0.5 / 0.65) + 0.5 * math.log(0.5 / 0.35))
         + 0.5 * (0.8 * math.log(0.8 / 0.65) + 0.2 * math.log(0.2 / 0.35))),
        ("mse", ((math.log(0.8) - math.log(0.5)) ** 2 + (math.log(0.2) - math.log(0.5)) ** 2) / 2),
    ],
)
def test_hand_values(name: str, expected: float) -> None:
    assert float(get(name)(two_class(0.8), two_class(0.5))) == pytest.approx(expected, rel=1e-12)


def test_js_is_bounded_by_log2_on_disjoint_supports() -> None:
    z_s = torch.tensor([[50.0, -50.0]], dtype=torch.float64)
    assert float(get("js")(z_s, -z_s)) == pytest.approx(math.log(2), rel=1e-9)
    assert float(get("tvd")(z_s, -z_s)) == pytest.approx(1.0, rel=1e-9)
    assert float(get("hellinger")(z_s, -z_s)) == pytest.approx(1.0, rel=1e-9)


def test_alpha_family_limits_and_members() -> None:
    fwd, rev = value("kl"), value("rkl")
    assert value("alpha", alpha=1.0) == fwd and value("alpha", alpha=0.0) == rev
    assert value("alpha", alpha=1 - 1e-6) == pytest.approx(fwd, rel=1e-5)
    assert value("alpha", alpha=1 + 1e-6) == pytest.approx(fwd, rel=1e-5)
    assert value("alpha", alpha=1e-6) == pytest.approx(rev, rel=1e-5)
    assert value("alpha", alpha=0.5) == pytest.approx(4 * value("hellinger"), rel=1e-12)
    assert value("alpha", alpha=2.0) == pytest.approx(value("pearson") / 2, rel=1e-12)
    assert value("alpha", alpha=-1.0) == pytest.approx(value("neyman") / 2, rel=1e-12)


def test_generalized_jsd_limits() -> None:
    fwd, rev = value("kl"), value("rkl")
    assert value("js", beta=0.0) == fwd and value("js", beta=1.0) == rev  # endpoints as in TRL
    b = 1e-5
    assert value("js", beta=b) / b == pytest.approx(fwd, rel=1e-3)
    assert value("js", beta=1 - b) / b == pytest.approx(rev, rel=1e-3)


def test_skew_limits() -> None:
    assert value("skew_kl", skew=0.0) == pytest.approx(value("kl"), rel=1e-12)
    assert value("skew_rkl", skew=0.0) == pytest.approx(value("rkl"), rel=1e-12)
    assert value("skew_kl", skew=0.999) < 1e-5 and value("skew_rkl", skew=0.999) < 1e-5
    # skewing shrinks the divergence monotonically
    vals = [value("skew_kl", skew=s) for s in (0.0, 0.1, 0.5, 0.9)]
    assert vals == sorted(vals, reverse=True)


# generator written independently here; value = sum_c q_c f(p_c / q_c)
GENERATORS = {
    "kl": ({}, {}, lambda u: u * np.log(u)),
    "rkl": ({}, {}, lambda u: -np.log(u)),
    "skl": ({}, {}, lambda u: (u - 1) * np.log(u)),
    "js": ({"beta": 0.3}, {"param": 0.3},
           lambda u: 0.3 * u * np.log(u) - (0.3 * u + 0.7) * np.log(0.3 * u + 0.7)),
    "tvd": ({}, {}, lambda u: np.abs(u - 1) / 2),
    "hellinger": ({}, {}, lambda u: (np.sqrt(u) - 1) ** 2 / 2),
    "pearson": ({}, {}, lambda u: (u - 1) ** 2),
    "neyman": ({}, {}, lambda u: (1 - u) ** 2 / u),
    "alpha": ({"alpha": -0.5}, {"param": -0.5}, lambda u: (u**-0.5 - 1 + 0.5 * (u - 1)) / 0.75),
    "skew_kl": ({"skew": 0.2}, {"param": 0.2}, lambda u: u * np.log(u / (0.2 * u + 0.8))),
    "skew_rkl": ({"skew": 0.2}, {"param": 0.2}, lambda u: -np.log(0.8 * u + 0.2)),
}


@pytest.mark.parametrize("name", GENERATORS)
def test_named_member_equals_generic_f_divergence(name: str) -> None:
    member_params, generic_params, f = GENERATORS[name]
    named = value(name, **member_params)
    expected = (Q * f(P / Q)).sum(-1).mean()
    assert named == pytest.approx(expected, rel=1e-9)
    assert value("fdiv", generator=name, **generic_params) == pytest.approx(named, rel=1e-9)
    as_callable = get("fdiv", generator=lambda u: torch.from_numpy(f(u.numpy())), temperature=1.5)
    assert float(as_callable(Z_S, Z_T)) == pytest.approx(named, rel=1e-9)


def test_mse_is_torch_mse_on_scaled_logits() -> None:
    expected = torch.nn.functional.mse_loss(Z_S / 1.5, Z_T / 1.5)
    torch.testing.assert_close(get("mse", temperature=1.5)(Z_S, Z_T), expected)
    torch.testing.assert_close(get("mse", temperature=1.5, t2=True)(Z_S, Z_T), 2.25 * expected)
