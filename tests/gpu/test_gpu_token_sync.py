"""On a CUDA device: a token-level distillation step (token cross-entropy and a masked
KL divergence, forward and backward) under ``torch.cuda.set_sync_debug_mode("error")``."""

from __future__ import annotations

import pytest
import torch

from tests.divergences.test_no_sync import token_kd_step

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_token_level_step_does_not_synchronise_on_cuda():
    step, head = token_kd_step(torch.device("cuda"))
    step()  # the first step allocates (and may synchronise once)
    head.zero_grad()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(head.weight.grad).all()
