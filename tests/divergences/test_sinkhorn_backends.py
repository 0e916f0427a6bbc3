"""Backend choice: only "auto" falls back, and only on a missing package or a failed KeOps probe."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from divtools import logits

from kdlab.divergences import get
from kdlab.divergences import keops_probe as kp
from kdlab.divergences import ot as kot
from kdlab.errors import ConfigError, ResourceError

SEGFAULT = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path: Path):
    """Fresh verdicts and warnings; probes write under tmp_path and run a stand-in that crashes."""
    monkeypatch.setattr(kp, "_VERDICTS", {})
    monkeypatch.setattr(kot, "_WARNED", set())
    monkeypatch.setenv("KDLAB_KEOPS_PROBE_DIR", str(tmp_path / "probe"))
    monkeypatch.setattr(kp, "probe_command", lambda device: SEGFAULT)


@pytest.fixture
def keops_calls(monkeypatch):
    used = []
    monkeypatch.setattr(kot, "_geomloss", lambda x, y, eps, opt, backend: used.append(backend) or x.sum() * 0)
    return used


def probe_passes(monkeypatch) -> None:
    monkeypatch.setattr(kp, "probe_command", lambda device: [sys.executable, "-c", "pass"])


def test_auto_small_is_dense_without_probing(keops_calls, monkeypatch) -> None:
    monkeypatch.setattr(kp, "keops_verdict", lambda *a, **k: pytest.fail("probed"))
    z = logits(10, 3)
    div = get("sinkhorn", backend="auto")
    div(z, z)
    assert div.last_stats["backend"] == "dense" and not keops_calls


def test_auto_large_uses_keops_after_a_passing_probe(keops_calls, monkeypatch, tmp_path: Path) -> None:
    probe_passes(monkeypatch)
    z = logits(10, 3)
    div = get("sinkhorn", backend="auto", auto_dense_max=50)
    div(z, z)
    assert keops_calls == ["online"] and div.last_stats["backend"] == "online"
    assert list((tmp_path / "probe").glob("*.json"))  # verdict cached on disk


def test_auto_large_after_a_crashing_probe_runs_online_torch_with_one_warning(keops_calls) -> None:
    z_s, z_t = logits(16, 3, seed=18), logits(16, 3, seed=19)
    div = get("sinkhorn", backend="auto", auto_dense_max=50)
    with pytest.warns(RuntimeWarning, match="SIGSEGV.*online_torch"):
        out = div(z_s, z_t)
    assert div.last_stats["backend"] == "online_torch" and not keops_calls
    torch.testing.assert_close(out, get("sinkhorn", backend="dense")(z_s, z_t), rtol=1e-6, atol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        div(z_s, z_t)  # no second warning, and the process is still alive


def test_auto_large_without_pykeops_runs_online_torch(keops_calls, monkeypatch) -> None:
    monkeypatch.setattr(kp, "missing_packages", lambda: ["pykeops"])
    monkeypatch.setattr(kp, "keops_verdict", lambda *a, **k: pytest.fail("probed without pykeops"))
    div = get("sinkhorn", backend="auto", auto_dense_max=50)
    with pytest.warns(RuntimeWarning, match="pykeops not installed"):
        div(logits(10, 3), logits(10, 3, seed=1))
    assert div.last_stats["backend"] == "online_torch"


@pytest.mark.parametrize("backend", ["online", "multiscale"])
def test_explicit_keops_backend_with_a_crashing_probe_is_an_error(keops_calls, backend: str) -> None:
    div = get("sinkhorn", backend=backend, cost="euclidean")
    z = logits(8, 3)
    for _ in range(2):  # every call: no process-wide fallback to dense
        with pytest.raises(ResourceError, match=f"backend='{backend}'.*SIGSEGV.*online_torch"):
            div(z, z)
    assert not keops_calls


def test_explicit_online_without_pykeops_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setattr(kp, "missing_packages", lambda: ["pykeops"])
    with pytest.raises(ConfigError, match="backend='online' needs pykeops.*pip install pykeops"):
        get("sinkhorn", backend="online")  # when built: before any model is loaded


def test_explicit_tensorized_without_geomloss_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setattr(kp, "missing_packages", lambda: ["geomloss"])
    with pytest.raises(ConfigError, match="backend='tensorized' needs geomloss"):
        get("sinkhorn", backend="tensorized")


def test_multiscale_in_more_than_3_dims_is_a_config_error(keops_calls) -> None:
    with pytest.raises(ConfigError, match="multiscale.*at most 3 dimensions, got 4"):
        get("sinkhorn", backend="multiscale", cost="euclidean")(logits(8, 4), logits(8, 4))


@pytest.mark.parametrize("backend,params", [("online", {}), ("auto", {"auto_dense_max": 50})])
def test_keops_errors_after_a_passing_probe_are_not_swallowed(monkeypatch, backend: str, params: dict) -> None:
    probe_passes(monkeypatch)

    def broken(*args, **kwargs):
        raise RuntimeError("KeOps kernel failed")

    monkeypatch.setattr(kot, "_geomloss", broken)
    div = get("sinkhorn", backend=backend, **params)
    with pytest.raises(RuntimeError, match="KeOps kernel failed"):
        div(logits(10, 3), logits(10, 3, seed=1))
