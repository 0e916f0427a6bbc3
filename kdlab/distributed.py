"""PyTorch's own distributed engine, rank-aware helpers.

Launch with ``torchrun --nproc_per_node N -m kdlab hardware=ddp ...`` (or ``accelerate
launch``, which sets the same environment). ``hardware=ddp`` uses NCCL on GPUs and gloo
on CPUs. Rank 0 alone logs, evaluates, checkpoints and writes caches; the others wait.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from kdlab.errors import ConfigError


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: str) -> torch.device:
    """Join the process group that ``torchrun`` described in the environment."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        raise ConfigError(
            "hardware=ddp needs a distributed launcher: torchrun --nproc_per_node N -m kdlab hardware=ddp ..."
        )
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("hardware.device=cuda but this machine has no CUDA device; use hardware=ddp_cpu")
        torch.cuda.set_device(local)
    if not active():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return torch.device(f"cuda:{local}") if device == "cuda" else torch.device("cpu")


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if not active() or world_size() == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def average_gradients(params) -> None:
    """Average the gradients of ``params`` over ranks: for trained parameters that live
    outside the DDP-wrapped model (the learned projections and filters of feature terms),
    which DDP does not synchronise. Every rank must pass the same parameters."""
    if not active() or world_size() == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world_size())


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's decision, shared with every rank (e.g. early stopping)."""
    if not active():
        return flag
    t = torch.tensor([int(flag)])
    dist.broadcast(t, src=0)
    return bool(t.item())


def shutdown() -> None:
    if active():
        dist.destroy_process_group()
