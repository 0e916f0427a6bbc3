"""The KeOps probe: a crashing probe gives a verdict instead of taking the process down."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from kdlab.divergences import keops_probe as kp

CPU = torch.device("cpu")


def stand_in(code: str, counter: Path) -> list:
    """A probe command that records each spawn in ``counter``, then runs ``code``."""
    return [sys.executable, "-c", f"open({str(counter)!r}, 'a').write('x')\n{code}"]


SEGFAULT = "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)"
PASS = "print('ok')"


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch):
    monkeypatch.setattr(kp, "_VERDICTS", {})


def spawns(counter: Path) -> int:
    return len(counter.read_text()) if counter.exists() else 0


def test_segfaulting_probe_is_a_failed_verdict_cached_on_disk(tmp_path: Path) -> None:
    counter = tmp_path / "spawns"
    verdict = kp.keops_verdict(CPU, command=stand_in(SEGFAULT, counter), directory=tmp_path / "cache")
    assert not verdict.ok and "SIGSEGV" in verdict.reason
    assert verdict.path is not None and verdict.path.parent == tmp_path / "cache"
    saved = json.loads(verdict.path.read_text())
    assert saved["ok"] is False and saved["key"] == kp.probe_key(CPU)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [verdict.path.name]  # no temporary left
    assert spawns(counter) == 1


def test_passing_probe_and_second_call_does_not_spawn(tmp_path: Path, monkeypatch) -> None:
    counter = tmp_path / "spawns"
    cmd = stand_in(PASS, counter)
    assert kp.keops_verdict(CPU, command=cmd, directory=tmp_path).ok
    assert kp.keops_verdict(CPU, command=cmd, directory=tmp_path).ok  # in-memory
    monkeypatch.setattr(kp, "_VERDICTS", {})  # a new process: read from disk
    again = kp.keops_verdict(CPU, command=cmd, directory=tmp_path)
    assert again.ok and again.path is not None
    assert spawns(counter) == 1


def test_key_change_probes_again(tmp_path: Path, monkeypatch) -> None:
    counter = tmp_path / "spawns"
    assert not kp.keops_verdict(CPU, command=stand_in(SEGFAULT, counter), directory=tmp_path).ok
    key = kp.probe_key(CPU)
    monkeypatch.setattr(kp, "probe_key", lambda device: {**key, "pykeops": "99.0"})
    monkeypatch.setattr(kp, "_VERDICTS", {})
    assert kp.keops_verdict(CPU, command=stand_in(PASS, counter), directory=tmp_path).ok
    assert spawns(counter) == 2 and len(list(tmp_path.glob("*.json"))) == 2


def test_failing_exit_status_and_unreadable_cache(tmp_path: Path) -> None:
    counter = tmp_path / "spawns"
    cmd = stand_in("import sys\nsys.exit('nvrtc: compilation failed')", counter)
    verdict = kp.keops_verdict(CPU, command=cmd, directory=tmp_path)
    assert not verdict.ok and "exit status 1" in verdict.reason and "nvrtc" in verdict.reason
    verdict.path.write_text("{ truncated")  # a corrupt file is probed again, then rewritten
    kp._VERDICTS.clear()
    assert kp.keops_verdict(CPU, command=stand_in(PASS, counter), directory=tmp_path).ok
    assert json.loads(verdict.path.read_text())["ok"] is True and spawns(counter) == 2


def test_timeout_is_not_written_to_disk(tmp_path: Path) -> None:
    counter = tmp_path / "spawns"
    verdict = kp.keops_verdict(CPU, command=stand_in("import time\ntime.sleep(30)", counter),
                               directory=tmp_path, timeout=0.5)
    assert not verdict.ok and "did not finish" in verdict.reason and verdict.path is None
    assert not list(tmp_path.glob("*.json"))


def test_probe_dir_overrides(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KDLAB_KEOPS_PROBE_DIR", raising=False)
    monkeypatch.setenv("KDLAB_CACHE_DIR", str(tmp_path / "kd"))
    assert kp.probe_dir() == tmp_path / "kd" / "keops_probe"
    monkeypatch.setenv("KDLAB_KEOPS_PROBE_DIR", str(tmp_path / "probe"))
    assert kp.probe_dir() == tmp_path / "probe"
    monkeypatch.delenv("KDLAB_KEOPS_PROBE_DIR")
    monkeypatch.delenv("KDLAB_CACHE_DIR")
    assert kp.probe_dir() == Path.home() / ".cache" / "kdlab" / "keops_probe"


def test_key_names_versions_and_device() -> None:
    key = kp.probe_key(CPU)
    assert set(key) == {"pykeops", "keopscore", "torch", "cuda", "device"}
    assert key["torch"] == torch.__version__ and key["device"] == "cpu"


@pytest.mark.slow
def test_real_probe_passes_on_cpu(tmp_path: Path) -> None:
    """The shipped probe script runs KeOps for real (compiles with g++ on first use: minutes)."""
    verdict = kp.keops_verdict(CPU, directory=tmp_path)
    assert verdict.ok, verdict.reason
