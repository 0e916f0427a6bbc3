"""Autocast from the ``hardware`` group; losses are always computed in float32."""

from __future__ import annotations

import contextlib

import torch

from kdlab.choices import Precision, check

PRECISIONS = {Precision.fp32: None, Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    check("hardware.precision", precision, Precision)
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
