"""Is KeOps safe to call here? Asked once per software and device setup, in a subprocess.

A broken KeOps build does not raise: on some setups (seen with torch 2.11 + CUDA 13 and
pykeops 2.3 on an H200) its first call ends the process with a segmentation fault, which
no ``try`` can catch. So before the first KeOps call of a process, a small KeOps
reduction (forward and backward, checked against PyTorch) runs in a child process on the
target device; its verdict is cached in memory and on disk, keyed by the versions of
pykeops, keopscore, torch and CUDA and the device's name, so later processes do not pay
the probe (a KeOps compilation, seconds to a minute) again.

Cache folder: ``$KDLAB_KEOPS_PROBE_DIR``, else ``$KDLAB_CACHE_DIR/keops_probe``, else
``~/.cache/kdlab/keops_probe``; one JSON file per key, written atomically. Delete a file
to probe again. A probe that times out is not written to disk (the machine may only have
been busy).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

PROBE_TIMEOUT_S = 600.0  # a first KeOps compilation takes up to a minute or two

PROBE_SCRIPT = """
import sys, torch
from pykeops.torch import LazyTensor
dev = torch.device(sys.argv[1])
g = torch.Generator().manual_seed(0)
x = torch.rand(40, 3, generator=g).to(dev).requires_grad_(True)
y = torch.rand(50, 3, generator=g).to(dev)
X, Y = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
lse = (-((X - Y).abs().sum(-1))).logsumexp(dim=1).view(-1)
ref = (-(x[:, None, :] - y[None, :, :]).abs().sum(-1)).logsumexp(dim=1)
(gx,) = torch.autograd.grad(lse.sum(), x)
(gr,) = torch.autograd.grad(ref.sum(), x)
assert torch.allclose(lse, ref, atol=1e-4), "KeOps value differs from PyTorch"
assert torch.allclose(gx, gr, atol=1e-4), "KeOps gradient differs from PyTorch"
print("ok")
"""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # "" when ok
    path: Optional[Path]  # where it is cached on disk (None: memory only)


_VERDICTS: Dict[str, Verdict] = {}


def probe_dir() -> Path:
    if os.environ.get("KDLAB_KEOPS_PROBE_DIR"):
        return Path(os.environ["KDLAB_KEOPS_PROBE_DIR"])
    if os.environ.get("KDLAB_CACHE_DIR"):
        return Path(os.environ["KDLAB_CACHE_DIR"]) / "keops_probe"
    return Path.home() / ".cache" / "kdlab" / "keops_probe"


def missing_packages() -> List[str]:
    """KeOps-route packages that are not installed (found without importing them)."""
    return [name for name in ("pykeops", "geomloss") if importlib.util.find_spec(name) is None]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def probe_key(device: torch.device) -> Dict[str, str]:
    """What a verdict depends on: a change of any of these probes again."""
    return {
        "pykeops": _version("pykeops"),
        "keopscore": _version("keopscore"),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "device": device_name(device),
    }


def probe_command(device: torch.device) -> List[str]:
    return [sys.executable, "-c", PROBE_SCRIPT, str(device)]


def _run(command: Sequence[str], timeout: float) -> tuple[Optional[bool], str]:
    """``(passed, reason)``; ``passed`` None when the probe timed out."""
    try:
        proc = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"the probe did not finish in {timeout:.0f} s"
    if proc.returncode == 0:
        return True, ""
    if proc.returncode < 0:
        return False, f"the probe process was killed by {signal.Signals(-proc.returncode).name}"
    last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
    return False, f"the probe process failed (exit status {proc.returncode}: {last})"


def _write_atomically(path: Path, data: Dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def keops_verdict(device: torch.device, command: Optional[Sequence[str]] = None,
                  directory: Optional[Path] = None, timeout: float = PROBE_TIMEOUT_S) -> Verdict:
    """The cached verdict for ``device``, probing in a child process the first time."""
    key = probe_key(device)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = (directory or probe_dir()) / f"{digest}.json"
    memo = f"{path}"
    if memo in _VERDICTS:
        return _VERDICTS[memo]
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            verdict = Verdict(bool(cached["ok"]), str(cached["reason"]), path)
            _VERDICTS[memo] = verdict
            return verdict
    except (OSError, ValueError, KeyError):
        pass  # absent or unreadable: probe again
    passed, reason = _run(command or probe_command(device), timeout)
    verdict = Verdict(bool(passed), reason, None)
    if passed is not None:
        try:
            _write_atomically(path, {"key": key, "ok": passed, "reason": reason})
            verdict = Verdict(bool(passed), reason, path)
        except OSError:
            pass  # a read-only cache costs a probe per process, nothing else
    _VERDICTS[memo] = verdict
    return verdict
