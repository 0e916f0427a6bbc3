"""Properties of every logit divergence: zero, sign, masks, gradients, precision, errors."""

from __future__ import annotations

import pytest
import torch
from divtools import logits

from kdlab.divergences import REGISTRY, get, names
from kdlab.divergences.base import LogitDivergence
from kdlab.errors import ConfigError

# every logit divergence of the library, from the registry (a new file in kdlab/divergences/
# joins these tests by itself), with the non-default parameters it declares
OWN = {n for n in names() if REGISTRY.get(n).__module__.startswith("kdlab.divergences.")}
ALL = {n: dict(REGISTRY.get(n).example_params) for n in sorted(OWN) if issubclass(REGISTRY.get(n), LogitDivergence)}
MEMBERS = {n: p for n, p in ALL.items() if REGISTRY.get(n).zero_on_identical}  # all but the cross-entropy kd


def test_every_library_divergence_is_tested() -> None:
    """The generic tests cover every LogitDivergence; Sinkhorn (a transport cost, not a
    divergence of per-class terms) has test files of its own."""
    assert OWN - set(ALL) == {"sinkhorn"}
    assert {"kl", "kd", "mse", "js", "fdiv"} <= set(ALL) and "kd" not in MEMBERS


@pytest.mark.parametrize("name", MEMBERS)
@pytest.mark.parametrize("T", [1.0, 3.0])
def test_zero_on_identical_inputs(name: str, T: float) -> None:
    z = logits(6, 4, 5, seed=1)
    assert float(get(name, temperature=T, **MEMBERS[name])(z, z.clone())) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_non_negative_and_positive_when_different(name: str) -> None:
    for seed in range(5):
        z_s, z_t = logits(16, 3, seed=seed), logits(16, 3, seed=seed + 100, scale=4.0)
        assert float(get(name, **ALL[name])(z_s, z_t)) > 1e-6


@pytest.mark.parametrize("name", ALL)
def test_mask_invariance_to_padded_contents(name: str) -> None:
    z_s, z_t = logits(3, 6, 7, seed=1), logits(3, 6, 7, seed=2)
    mask = torch.rand(3, 6, generator=torch.Generator().manual_seed(1)) > 0.3
    div = get(name, **ALL[name])
    ref = div(z_s[mask], z_t[mask])
    for fill in (float("nan"), float("inf"), -1e30, 0.0):
        junk_s, junk_t = z_s.clone(), z_t.clone()
        junk_s[~mask], junk_t[~mask] = fill, -fill
        js = junk_s.requires_grad_(True)
        out = div(js, junk_t, mask)
        torch.testing.assert_close(out, ref)
        out.backward()
        assert torch.all(js.grad[~mask] == 0) and torch.isfinite(js.grad).all()


def test_all_masked_gives_zero() -> None:
    z = logits(2, 3, 4)
    out = get("kl")(z.requires_grad_(True), z.detach() + 1, torch.zeros(2, 3, dtype=torch.bool))
    assert float(out.detach()) == 0.0


@pytest.mark.parametrize("name", ALL)
def test_gradcheck_float64(name: str) -> None:
    z_s, z_t = logits(3, 4, seed=1).requires_grad_(True), logits(3, 4, seed=2)
    div = get(name, temperature=1.5, **ALL[name])
    assert torch.autograd.gradcheck(lambda s: div(s, z_t), (z_s,))


@pytest.mark.parametrize("name", ALL)
def test_teacher_detached(name: str) -> None:
    z_s, z_t = logits(3, 4, seed=1).requires_grad_(True), logits(3, 4, seed=2).requires_grad_(True)
    get(name, **ALL[name])(z_s, z_t).backward()
    assert z_t.grad is None and z_s.grad is not None


ADVERSARIAL = {
    "near one-hot": (torch.tensor([[30.0, 0.0, 0.0], [0.0, 0.0, 30.0]]), torch.tensor([[0.0, 30.0, 0.0], [0.0, 0.0, 29.0]])),
    "very large": (torch.tensor([[6e4, -6e4, 0.0], [1e4, 1e4, -1e4]]), torch.tensor([[-6e4, 6e4, 0.0], [1e4, -1e4, 1e4]])),
    "disjoint": (torch.tensor([[200.0, 200.0, -200.0, -200.0]]), torch.tensor([[-200.0, -200.0, 200.0, 200.0]])),
}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", ADVERSARIAL)
def test_half_precision_autocast_adversarial(name: str, dtype: torch.dtype, case: str) -> None:
    s, t = ADVERSARIAL[case]
    if dtype == torch.float16:  # largest finite float16 is 65504
        s, t = s.clamp(-6e4, 6e4), t.clamp(-6e4, 6e4)
    z_s = s.to(dtype).requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        out = get(name, **ALL[name])(z_s, t.to(dtype))
    out.backward()
    assert out.dtype == torch.float32
    assert torch.isfinite(out) and torch.isfinite(z_s.grad).all()


def test_reductions_on_sequences() -> None:
    z_s, z_t = logits(4, 5, 6, seed=1), logits(4, 5, 6, seed=2)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[0, 3:] = False
    per_token = get("kl", reduction="sum")(z_s, z_t, mask)
    torch.testing.assert_close(get("kl")(z_s, z_t, mask), per_token / int(mask.sum()))
    torch.testing.assert_close(get("kl", reduction="batchmean")(z_s, z_t, mask), per_token / 4)


@pytest.mark.parametrize(
    "name,params,key",
    [
        ("kl", {"temperature": 0.0}, "temperature"),
        ("js", {"beta": 1.5}, "beta"),
        ("js", {"beta": -0.1}, "beta"),
        ("alpha", {"alpha": float("nan")}, "alpha"),
        ("skew_kl", {"skew": 1.0}, "skew"),
        ("skew_rkl", {"skew": -0.5}, "skew"),
        ("fdiv", {"generator": "bogus"}, "generator"),
        ("fdiv", {"generator": "kl", "param": 0.5}, "param"),
        ("fdiv", {"generator": "alpha", "param": 1.0}, "param"),
        ("fdiv", {"generator": "js", "param": 0.0}, "param"),
        ("mse", {"reduction": "none"}, "reduction"),
    ],
)
def test_out_of_range_params_name_the_parameter(name: str, params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        get(name, **params)


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'kl'"):
        get("kll")


def test_temperature_set_out_of_range_between_steps() -> None:
    div = get("kl")
    div.temperature = -2.0
    with pytest.raises(ConfigError, match="temperature"):
        div(torch.zeros(2, 3), torch.zeros(2, 3))


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="same shape"):
        get("js")(torch.zeros(2, 3, 4), torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="mask"):
        get("js")(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        get("js")(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2, 3))


FUSED_CASES = [(n, p) for n, p in MEMBERS.items() if get(n, **p).fused] + [
    ("js", {"beta": 0.0}), ("js", {"beta": 1.0}), ("alpha", {"alpha": 1.0}), ("alpha", {"alpha": 0.0}),
    ("alpha", {"alpha": -2.5}), ("skew_kl", {"skew": 0.0}), ("skew_rkl", {"skew": 0.0}), ("kd", {}),
]


@pytest.mark.parametrize("name,params", FUSED_CASES, ids=lambda x: str(x))
def test_fused_gradient_equals_autograd(name: str, params: dict) -> None:
    z_s, z_t = logits(4, 6, 9, seed=3, scale=3.0), logits(4, 6, 9, seed=4, scale=3.0)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 2:] = False
    grads, values = [], []
    for fused in (True, False):
        div = get(name, temperature=1.3, **params)
        div.fused = fused
        zs = z_s.clone().requires_grad_(True)
        out = div(zs, z_t, mask)
        (g,) = torch.autograd.grad(out, zs)
        grads.append(g)
        values.append(out.detach())
    torch.testing.assert_close(values[0], values[1])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-12)
