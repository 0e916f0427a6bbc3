"""Divergences and the token loss never wait for the device: no host synchronisation in a
class-level ``kd`` call or a token-level distillation step, forward and backward."""

from __future__ import annotations

import torch

from kdlab.divergences import get
from kdlab.families import get_family
from kdlab.families.base import Outputs
from kdlab.objective import Objective, Term
from tests.synctools import SyncWatch


def count(step) -> list:
    """Every synchronising call during ``step()`` (whoever makes it: here the callers are
    tests or kdlab), see ``tests.synctools``."""
    with SyncWatch() as watch:
        step()
    return [s.what for s in watch.seen]


def test_the_count_sees_item_and_boolean_indexing() -> None:
    x, keep = torch.randn(4, 3), torch.tensor([True, False, True, True])
    assert len(count(lambda: x[keep].sum().item())) == 2


def test_class_level_kd_call_does_not_synchronise() -> None:
    z_s, z_t = torch.randn(8, 3, requires_grad=True), torch.randn(8, 3)
    assert count(lambda: get("kd", temperature=2.0)(z_s, z_t).backward()) == []


def token_kd_step(device: torch.device):
    """One token-level distillation step on ``device``: token cross-entropy on the answer
    tokens plus a masked KL term, through the objective, forward and backward (bf16
    logits, a class the teacher masks with -inf). Returns ``(step, head)``."""
    family = get_family("causal")
    B, A, V = 3, 5, 17
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(8, V).to(device, torch.bfloat16)
    hidden = torch.randn(B, A, 8, generator=g).to(device, torch.bfloat16)
    teacher = torch.randn(B, A, V, generator=g)
    teacher[..., 3] = -float("inf")
    teacher = teacher.to(device, torch.bfloat16)
    mask = torch.ones(B, A, dtype=torch.bool)
    mask[0, :2] = mask[2, :4] = False
    mask = mask.to(device)
    batch = {"target_ids": torch.randint(0, V, (B, A), generator=g).to(device)}
    objective = Objective(0.5, [Term("kl", 0.5, get("kl", temperature=2.0))])

    def step() -> None:
        student = Outputs(head(hidden), mask)
        loss, _ = objective(student, family.supervised_loss(student, batch), Outputs(teacher, mask))
        loss.backward()

    return step, head


def test_token_level_distillation_step_does_not_synchronise() -> None:
    step, head = token_kd_step(torch.device("cpu"))
    assert count(step) == []
    assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()
