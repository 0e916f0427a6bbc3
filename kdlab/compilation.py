"""``hardware.compile=true``: the student's training forward through ``torch.compile``.

Compilation happens lazily, at the first forward, and needs a working backend (Triton on
CUDA, a C++ compiler on CPU). Where it fails, the run is not lost: one warning, and the
forward runs eagerly from then on. The eager module keeps its own state dict (no
``_orig_mod.`` prefixes), so checkpoints, evaluation and the saved student are the same
with or without compilation.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


class CompiledForward:
    """Calls ``torch.compile(module)``; on a compilation failure, warns once and calls
    ``module`` instead. Attribute access (``config``, ``module`` of DDP) goes to
    ``module``, so model families treat it as the module itself."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.eager = module
        self.compiled: Any = torch.compile(module)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001  (any backend failure: Triton, C++ compiler, dynamo)
            first_line = (str(e).splitlines() or [""])[0][:300]
            log.warning("hardware.compile=true: torch.compile failed on this platform (%s: %s); "
                        "training continues without compilation", type(e).__name__, first_line)
            self.compiled = None
            return self.eager(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in ("eager", "compiled"):  # not set yet (copying, unpickling)
            raise AttributeError(name)
        return getattr(self.eager, name)


def maybe_compile(module: torch.nn.Module, enabled: bool) -> Any:
    """``module`` itself, or a ``CompiledForward`` of it when ``enabled``."""
    return CompiledForward(module) if enabled else module
