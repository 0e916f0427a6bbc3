"""On a CUDA device: every registered divergence against a float64 CPU reference, and the
KeOps probe. Skipped where there is no CUDA device; ``make bench-gpu`` runs them."""

from __future__ import annotations

import contextlib

import pytest
import torch

from kdlab import divergences
from kdlab.divergences import keops_probe
from kdlab.families.base import Outputs
from kdlab.objective import term_value
from kdlab.terms import Reads

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


def value_and_grad(name: str, device: torch.device, dtype: torch.dtype, masked: bool):
    """A divergence's value and gradient on fixed logits ``[3, 5, 7]`` (token level, some
    positions masked) or ``[12, 7]`` (class level, with gold labels), computed on
    ``device`` in ``dtype``; returned as float64 on the CPU."""
    g = torch.Generator().manual_seed(0)
    shape = (3, 5, 7) if masked else (12, 7)
    z_s, z_t = torch.randn(*shape, generator=g) * 2, torch.randn(*shape, generator=g) * 3
    mask = (torch.rand(shape[:-1], generator=g) > 0.3) if masked else None
    labels = torch.randint(0, shape[-1], shape[:1], generator=g)
    s = z_s.to(device, dtype).requires_grad_(True)
    t = z_t.to(device, dtype)
    m = None if mask is None else mask.to(device)
    module = divergences.get(name).to(device)
    # the objective's own call: passes labels and the teacher's mask to the terms that read them
    out = term_value(module, Outputs(s, m), Outputs(t, m), labels.to(device), None)
    out.backward()
    return out.detach().double().cpu(), s.grad.double().cpu()


def takes(name: str, masked: bool) -> bool:
    module = divergences.get(name)
    if masked:
        return Reads.LABELS not in module.reads  # class-level terms with gold labels
    return True


@pytest.mark.parametrize("masked", [False, True], ids=["classes", "tokens"])
@pytest.mark.parametrize("name", divergences.names())
def test_every_divergence_on_cuda_matches_float64_on_cpu(name, masked):
    if not takes(name, masked):
        return  # a class-level term with labels: covered by the "classes" case
    ref_value, ref_grad = value_and_grad(name, torch.device("cpu"), torch.float64, masked)
    value, grad = value_and_grad(name, CUDA, torch.float32, masked)
    torch.testing.assert_close(value, ref_value, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-3, atol=1e-5)


def test_keops_probe_on_cuda(tmp_path, monkeypatch):
    """The real probe runs in a child process and returns a verdict whatever KeOps does
    (this process survives a KeOps crash); Sinkhorn with ``backend=auto`` beyond its dense
    limit runs either way (KeOps where the verdict allows it, else ``online_torch``) and
    agrees with the dense backend; an explicit KeOps backend runs only where it allows."""
    monkeypatch.setenv("KDLAB_KEOPS_PROBE_DIR", str(tmp_path))
    monkeypatch.setattr(keops_probe, "_VERDICTS", {})
    monkeypatch.setattr("kdlab.divergences.ot._WARNED", set())  # the fallback warns once per reason
    verdict = keops_probe.keops_verdict(CUDA)
    assert verdict.ok or verdict.reason
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 5, generator=g).to(CUDA), torch.randn(96, 5, generator=g).to(CUDA)
    dense = divergences.get("sinkhorn", mode="sound", backend="dense")(x, y)
    with pytest.warns(RuntimeWarning, match="online_torch") if not verdict.ok else contextlib.nullcontext():
        auto = divergences.get("sinkhorn", mode="sound", backend="auto", auto_dense_max=64)(x, y)
    torch.testing.assert_close(auto, dense, rtol=1e-3, atol=1e-5)
    online = divergences.get("sinkhorn", mode="sound", backend="online")
    if verdict.ok and not keops_probe.missing_packages():
        torch.testing.assert_close(online(x, y), dense, rtol=1e-3, atol=1e-5)
    else:
        with pytest.raises(Exception, match="online"):
            online(x, y)
