"""``trainer.on_nan`` without a host synchronisation per step.

Asking ``if not torch.isfinite(loss)`` every step makes the CPU wait for the GPU to finish
the step, which on a launch-bound GPU (small models, short sequences) costs a large share
of its throughput. Instead, every flag stays on the device:

- each micro-batch ORs ``~isfinite(loss)`` into a pending flag;
- at the optimiser step, ``found = pending | ~isfinite(grad_norm)`` is handed to the fused
  AdamW kernel as ``found_inf`` (the mechanism ``GradScaler`` uses): a flagged step leaves
  weights, moments and AdamW's step count untouched, without the host ever looking;
- the first flagged step since the last check, its term values and the number of skipped
  steps are kept on the device and read once at each *check* (every logging step, before
  a checkpoint or an evaluation, and at the end of training).

``on_nan=skip``: a flagged step is skipped (it still counts toward ``max_steps`` and the
learning-rate schedule); the check logs a warning and updates the skipped count.
``on_nan=stop``: the flagged step is skipped the same way, and the check raises
``FloatingPointError`` naming it, before any checkpoint is written; steps between it and
the check have run. Under fp16 the gradient scaler decides the skip from the gradients
(a non-finite loss makes them non-finite), and the checks work as above.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, List, Optional

import torch

from kdlab import distributed
from kdlab.choices import OnNan, values

log = logging.getLogger(__name__)

ON_NAN = values(OnNan)


class NonFiniteGuard:
    """Device-side record of non-finite steps; ``check`` is the only host synchronisation."""

    def __init__(self, policy: str, phase: str, device: torch.device, skipped: int = 0) -> None:
        """``skipped``: steps skipped before (a resumed run's count)."""
        if policy not in ON_NAN:
            raise ValueError(f"on_nan={policy!r}: valid values are {', '.join(ON_NAN)}")
        self.policy, self.phase, self.device = policy, phase, device
        self.names: Optional[List[str]] = None
        self.pending = torch.zeros((), dtype=torch.bool, device=device)  # this accumulation
        self.skipped = torch.full((), skipped, dtype=torch.long, device=device)  # since the start
        self.first_step = torch.full((), -1, dtype=torch.long, device=device)  # since the last check
        self.step_parts: Optional[torch.Tensor] = None  # [K] parts of the first bad micro-batch
        self.first_parts: Optional[torch.Tensor] = None  # [K] parts at first_step

    def micro_batch(self, parts: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Record one micro-batch's terms (``parts["loss"]`` the total); returns them
        stacked ``[K]`` (float32, detached) and whether the loss is finite (bool scalar)."""
        values = torch.stack([v.detach().float() for v in parts.values()])  # [K]
        if self.names is None:
            self.names = list(parts)
            self.step_parts, self.first_parts = values.clone(), torch.zeros_like(values)
        finite = torch.isfinite(values[self.names.index("loss")])
        # keep the first bad micro-batch of this accumulation, else the latest
        self.step_parts = torch.where(self.pending, self.step_parts, values)
        self.pending = self.pending | ~finite
        return values, finite

    def before_step(self, optimizer: torch.optim.Optimizer, grad_norm: torch.Tensor, step: int,
                    fused: bool) -> bool:
        """Flag the coming optimiser step (number ``step``); returns whether to call
        ``optimizer.step()`` (always for a fused optimizer, which skips on the device)."""
        found = self.pending | ~torch.isfinite(grad_norm)
        if distributed.active() and distributed.world_size() > 1:  # every rank skips, or none
            flag = found.to(torch.int32)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            found = flag.bool()
        new = found & (self.first_step < 0)
        self.first_step = torch.where(new, step, self.first_step)
        self.first_parts = torch.where(new, self.step_parts, self.first_parts)
        self.skipped = self.skipped + found
        self.pending = torch.zeros_like(self.pending)
        if fused:
            optimizer.found_inf = found.float()  # read by the fused AdamW kernel
            return True
        return not bool(found)  # a non-fused optimizer cannot skip on the device

    def check(self) -> int:
        """Read the flags (one host transfer): raise under ``stop``, warn under ``skip``;
        returns the number of steps skipped since the start."""
        first_step, skipped, *parts = torch.cat([
            torch.stack([self.first_step, self.skipped]).double(),
            (self.first_parts if self.first_parts is not None else self.skipped.new_zeros(0)).double(),
        ]).tolist()
        if first_step < 0:
            return int(skipped)
        self.first_step = torch.full_like(self.first_step, -1)
        loss = parts[self.names.index("loss")] if self.names else math.nan
        what = "gradient norm" if math.isfinite(loss) else "loss"  # a finite loss: its gradient was not
        detail = ", ".join(f"{k}={v:.4g}" for k, v in zip(self.names or [], parts, strict=True))
        if self.policy == "stop":
            raise FloatingPointError(
                f"{self.phase}: non-finite {what} at step {int(first_step)} ({detail}); no checkpoint "
                "was written for it. Lower the learning rate, check the divergence parameters, "
                "or set trainer.on_nan=skip"
            )
        log.warning("%s: skipped steps with a non-finite loss or gradient, %d in all; the first since the "
                    "last check: step %d, non-finite %s (%s)", self.phase, int(skipped), int(first_step),
                    what, detail)
        return int(skipped)
