"""Seeing host synchronisations without a GPU, and saying whose code made them.

On CUDA the host waits for the device whenever it needs a value the device computes: a
scalar read (``.item()``, ``float(t)``, ``bool(t)``, ``int(t)``, ``if t:``), an output
size only the device knows (``x[mask]``, ``nonzero``, ``masked_select``, ``unique``), or a
copy back to the host (``.tolist()``, ``.cpu()``, ``.numpy()``). The same operators run
on the CPU, so counting them there counts what a CUDA run would synchronise on.

``SyncWatch`` sees every such call and blames the innermost frame outside torch (the
code that chose the operator): calls made by kdlab's own files are the ones a test can
forbid; those made by other libraries (a transformers model's own checks) are recorded
apart. Work on the host by contract is not a synchronisation and is left out: the data
loader's (collation, before the batch is copied to the device) and a teacher-output
source's ``from_host`` (``kdlab.teacher_outputs.HostBatchSource``: it is given the batch
as collated, before the copy).

Not seen on the CPU: blocking copies to the device (``torch.tensor(..., device="cuda")``,
``.to("cuda")`` without ``non_blocking``), which wait for the device's queue on CUDA but
are no copy at all on the CPU; ``tests/gpu`` sees them under the sync debug mode.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import kdlab

aten = torch.ops.aten
# ``.item()``, ``bool(t)``, ``float(t)``, ``int(t)`` all read a scalar with
# _local_scalar_dense; these others must learn an output size that only the device knows.
SYNCING = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
           aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
           aten.equal.default, aten.is_nonzero.default}
# Copies to the host that do not go through an operator on the CPU.
HOST_COPIES = ("tolist", "cpu", "numpy")

TORCH_DIR = str(Path(torch.__file__).resolve().parent)
KDLAB_DIR = str(Path(kdlab.__file__).resolve().parent)
LOADER_DIR = str(Path(torch.utils.data.__file__).resolve().parent)
HOST_FUNCTIONS = ("from_host",)  # kdlab functions given host tensors only
THIS_FILE = str(Path(__file__).resolve())


def boolean_index(func, args) -> bool:
    """``x[mask]`` (and its assignment form): indexing with a bool tensor."""
    if func not in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
        return False
    return any(i is not None and i.dtype == torch.bool for i in args[1])


@dataclass
class Sync:
    what: str  # the operator or method
    where: str  # file:line (function) of the code that called it
    kdlab: bool  # whether that code is kdlab's


def blame(what: str) -> Optional[Sync]:
    """The innermost caller outside torch; None in host-side work (see the module)."""
    frame, caller = sys._getframe(1), None
    while frame is not None:
        name = str(Path(frame.f_code.co_filename).resolve()) if not frame.f_code.co_filename.startswith("<") \
            else frame.f_code.co_filename
        if name.startswith(LOADER_DIR) or (name.startswith(KDLAB_DIR) and frame.f_code.co_name in HOST_FUNCTIONS):
            return None
        if caller is None and not name.startswith(TORCH_DIR) and name != THIS_FILE and not name.startswith("<"):
            caller = Sync(what, f"{name}:{frame.f_lineno} ({frame.f_code.co_name})", name.startswith(KDLAB_DIR))
        frame = frame.f_back
    return caller


class SyncWatch(TorchDispatchMode):
    """Records every synchronising call while ``armed`` (a callable, checked per call)."""

    def __init__(self, armed: Callable[[], bool] = lambda: True) -> None:
        super().__init__()
        self.armed = armed
        self.seen: List[Sync] = []
        self._originals = {}

    def _note(self, what: str) -> None:
        if self.armed():
            found = blame(what)
            if found is not None:
                self.seen.append(found)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNCING or boolean_index(func, args):
            self._note(str(func))
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for name in HOST_COPIES:
            original = self._originals[name] = getattr(torch.Tensor, name)

            def watched(t, *a, _original=original, _name=name, **k):
                self._note(f"Tensor.{_name}")
                return _original(t, *a, **k)

            setattr(torch.Tensor, name, watched)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        return super().__exit__(*exc)

    @property
    def kdlab(self) -> List[Sync]:
        """The synchronisations kdlab's own code made."""
        return [s for s in self.seen if s.kdlab]


def syncs(step: Callable[[], object]) -> List[Sync]:
    """kdlab's synchronisations during ``step()``."""
    with SyncWatch() as watch:
        step()
    return watch.kdlab
