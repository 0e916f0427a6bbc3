"""Teacher outputs computed once, stored memory-mapped on disk, shared by every run.

The teacher is frozen during distillation, so its logits on a list of examples are a pure
function of (teacher, tokenizer, the examples' content and order, encoding, precision):
``kdlab.cache_keys.teacher_outputs``. They are computed in one pass and saved as
``<cache_dir>/teacher_outputs/<key>.npy`` (float32 ``[N, C]``), then copied once to the
training device and indexed by row for each shuffled batch; every epoch, run and sweep
member with the same key reuses them. Any change in the key's parts gives a new file.

Only classification-sized outputs (``[N, C]``) are cached; token-level ``[N, T, V]``
logits are computed live.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Protocol, runtime_checkable

import numpy as np
import torch

from kdlab import distributed
from kdlab.batching import teacher_batch
from kdlab.families.base import Family, Outputs
from kdlab.precision import autocast

log = logging.getLogger(__name__)


def _length(item: Any) -> int:
    ids = item.get("input_ids") if isinstance(item, dict) else None
    return len(ids) if ids is not None else 0


def compute(model: torch.nn.Module, dataset: Any, family: Family, device: torch.device, precision: str,
            batch_size: int) -> np.ndarray:
    """Teacher logits for every item of ``dataset``, in dataset order: ``[N, C]`` float32.

    Items are batched in order of length (each batch padded to its longest member), which
    removes most of the padding a pass in dataset order computes; rows are put back in
    dataset order. Padding is masked, so the logits do not depend on the grouping beyond
    float rounding.
    """
    model.to(device).eval()
    order = sorted(range(len(dataset)), key=lambda i: _length(dataset[i]))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, order), batch_size=batch_size,
                                         collate_fn=dataset.collate)
    rows = []
    with torch.no_grad():
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device, precision):
                rows.append(family.forward(model, batch).logits.float().cpu().numpy())
    values = np.concatenate(rows)
    out = np.empty_like(values)
    out[np.asarray(order)] = values
    return out


def cached(path: Path, make: Callable[[], np.ndarray]) -> np.ndarray:
    """Load ``path`` memory-mapped, computing and saving it atomically (rank 0) if missing."""
    if not path.exists():
        if distributed.is_main():
            path.parent.mkdir(parents=True, exist_ok=True)
            values = make()
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, values)
            os.replace(tmp, path)
            log.info("teacher outputs cached at %s", path)
        distributed.barrier()
    else:
        log.info("teacher outputs read from %s", path)
    return np.load(path, mmap_mode="r")


@runtime_checkable
class HostBatchSource(Protocol):
    """A teacher-output source that reads its batch on the host (a cache on disk, indexed
    by example): the trainer calls ``from_host`` with the batch as collated, before its
    copy to the device, instead of ``source(batch)`` with the copy, whose reading back
    would make every step wait for the device."""

    def from_host(self, batch: Dict[str, torch.Tensor], device: torch.device) -> Outputs: ...


def teacher_for(source: Callable[[Dict[str, torch.Tensor]], Outputs], batch: Dict[str, torch.Tensor],
                host_batch: Optional[Dict[str, torch.Tensor]], device: torch.device) -> Outputs:
    """``source``'s outputs for a batch, given on the device (``batch``) and as collated
    (``host_batch``; None when the batch was made on the device): see ``HostBatchSource``."""
    if host_batch is not None and isinstance(source, HostBatchSource):
        return source.from_host(host_batch, device)
    return source(batch)


class CachedTeacher:
    """``teacher_outputs(batch)`` backed by the stored logits (rows picked by ``index``).

    The ``[N, C]`` table (classification outputs: a few MB) is copied once to the device
    of the batch and indexed there, so a batch on the GPU never waits for a copy of its
    indices back to the host."""

    def __init__(self, logits: np.ndarray) -> None:
        self.logits = logits
        self._tables: Dict[torch.device, torch.Tensor] = {}

    def __call__(self, batch: Dict[str, torch.Tensor]) -> Outputs:
        index = batch["index"]  # [B]
        table = self._tables.get(index.device)
        if table is None:
            table = self._tables[index.device] = torch.from_numpy(np.array(self.logits)).to(index.device)
        return Outputs(table[index])  # [B, C]


class LiveTeacher:
    """``teacher_outputs(batch)`` by a forward pass under ``no_grad`` in eval mode."""

    def __init__(self, model: torch.nn.Module, family: Family, device: torch.device, precision: str):
        self.model, self.family, self.device, self.precision = model.to(device).eval(), family, device, precision

    @torch.no_grad()
    def __call__(self, batch: Dict[str, torch.Tensor]) -> Outputs:
        with autocast(self.device, self.precision):
            return self.family.forward(self.model, teacher_batch(batch))
