"""What a student saves: parameters, size of its weights, inference latency and throughput.

Each model is timed on the run's device with its family's prediction path (collation,
forward pass, answer scoring) on the same examples: the first ``eval_batch_size`` of the
first dev split, one batch. One warm-up pass is not counted; the latency is the median of
a few timed passes, so the measurement costs a handful of dev batches.

Sizes: a saved model's ``model.safetensors`` file; for a model that was not saved (the
teacher, or students under ``trainer.save_student=false``) the bytes its tensors take,
each storage counted once (tied embeddings are one tensor), which is what safetensors
writes save for a header of a few kilobytes.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from kdlab.models import count_params

WARMUP = 1
REPEATS = 3
SAFETENSORS = "model.safetensors"
TENSOR_BYTES = "tensor bytes"


def tensor_bytes(model: torch.nn.Module) -> int:
    """Bytes of ``model``'s parameters and buffers, each storage once."""
    seen, total = set(), 0
    for t in list(model.state_dict().values()):
        key = (t.device, t.untyped_storage().data_ptr())
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_predictions(family: Any, model: torch.nn.Module, dataset: Any, batch_size: int,
                     device: torch.device, precision: str, repeats: int = REPEATS) -> Dict[str, float]:
    """Median seconds to predict one batch of the first ``batch_size`` examples of ``dataset``."""
    n = min(batch_size, len(dataset))
    loader = torch.utils.data.DataLoader(dataset, batch_size=n, sampler=range(n), collate_fn=dataset.collate)
    times = []
    for i in range(WARMUP + repeats):
        _sync(device)
        t0 = time.perf_counter()
        family.predictions(model, loader, device, precision)
        _sync(device)
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"latency_ms": round(median * 1e3, 3), "throughput": round(n / median, 2), "batch_size": n,
            "repeats": repeats}


def footprint(family: Any, model: torch.nn.Module, dataset: Any, batch_size: int, device: torch.device,
              precision: str, saved_dir: Optional[Path] = None) -> Dict[str, Any]:
    """Parameters, weights size (``weights_measure`` says which) and timing of one model."""
    from kdlab.export import weights_bytes

    on_disk = weights_bytes(saved_dir) if saved_dir is not None else 0
    return {
        "params": count_params(model),
        "weights_bytes": on_disk or tensor_bytes(model),
        "weights_measure": SAFETENSORS if on_disk else TENSOR_BYTES,
        **time_predictions(family, model, dataset, batch_size, device, precision),
        "device": str(device), "precision": precision,
    }


def ratios(teacher: Mapping[str, Any], student: Mapping[str, Any]) -> Dict[str, float]:
    """Teacher / student: how many times fewer parameters, smaller weights, faster."""
    return {"params": round(teacher["params"] / student["params"], 3),
            "size": round(teacher["weights_bytes"] / student["weights_bytes"], 3),
            "latency": round(teacher["latency_ms"] / student["latency_ms"], 3)}


def measure(family: Any, models: Mapping[str, Any], datasets: Mapping[str, Any], batch_size: int,
            device: torch.device, precision: str, saved: Mapping[str, Path]) -> Dict[str, Any]:
    """``{role: footprint}`` for ``models`` (``{role: nn.Module}``, the teacher under
    ``"teacher"``), each on its own tokenisation ``datasets[role]`` of the same examples,
    plus ``"savings"``: ``{student role: ratios}``."""
    out: Dict[str, Any] = {role: footprint(family, m, datasets[role], batch_size, device, precision,
                                           saved.get(role)) for role, m in models.items()}
    out["savings"] = {role: ratios(out["teacher"], fp) for role, fp in out.items() if role != "teacher"}
    return out
