"""On a CUDA device: a loop without host synchronisation, bf16 end to end in every family,
resume. Skipped where there is no CUDA device; ``make bench-gpu`` runs them."""

from __future__ import annotations

import math

import pytest
import torch

from kdlab import divergences
from kdlab.config import LoggerConfig
from kdlab.objective import Objective, Term, fine_tune_objective
from kdlab.teacher_outputs import CachedTeacher, LiveTeacher
from kdlab.tracking import Tracker
from kdlab.trainer import train
from tests.test_step_sync import ENCODER_TERMS
from tests.test_trainer import FAMILY, Offset, ToyData, _interrupt, _rows, settings, tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


def run_checked(monkeypatch, tracker, objective, teacher, device, steps=6, **kw):
    """``steps`` steps logging only at the last; steps 2 to ``steps - 1`` run under
    ``torch.cuda.set_sync_debug_mode("error")``: a synchronisation there raises."""
    calls = []

    class Checked:
        def __getattr__(self, name):
            return getattr(FAMILY, name)

        def forward(self, model, batch):
            calls.append(1)
            if device.type == "cuda":  # checking from step 2 (the first allocates state) to the last's forward
                torch.cuda.set_sync_debug_mode("error" if 2 <= len(calls) < steps else "default")
            return FAMILY.forward(model, batch)

    # transformers' BERT asks ``attention_mask.all()`` each forward (the model's own
    # synchronisation, the same in any loop): not the trainer's
    monkeypatch.setattr("transformers.masking_utils._ignore_bidirectional_mask_sdpa", lambda *a, **k: False)
    try:
        return train(tiny_model(), ToyData(), Checked(), objective, settings(max_steps=steps, batch_size=4,
                     log_every=1000, **kw), tracker, "test", device, "bf16" if device.type == "cuda" else "fp32",
                     teacher_outputs=teacher)
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("on_nan", ["stop", "skip"])
def test_steps_between_logs_do_not_synchronise_on_cuda(monkeypatch, tracker, on_nan):
    logits = FAMILY.forward(tiny_model(seed=1).eval(), ToyData().collate(list(range(32)))).logits.detach().numpy()
    run_checked(monkeypatch, tracker, fine_tune_objective(), None, CUDA, on_nan=on_nan)
    kd = Objective(0.5, [Term("offset", 0.5, Offset())])
    run_checked(monkeypatch, tracker, kd, CachedTeacher(logits), CUDA, on_nan=on_nan)


@pytest.mark.parametrize("terms", sorted(ENCODER_TERMS))
def test_distillation_terms_do_not_synchronise_on_cuda(monkeypatch, tracker, terms):
    """The terms of tests/test_step_sync.py (label terms, f-divergences, Sinkhorn and its
    diagnostics), with a live bf16 teacher, under the sync debug mode."""
    teacher = LiveTeacher(tiny_model(seed=1), FAMILY, CUDA, "bf16")
    run_checked(monkeypatch, tracker, Objective(0.5, ENCODER_TERMS[terms]()), teacher, CUDA)


def test_the_sync_check_sees_a_synchronisation(monkeypatch, tracker):
    class Syncing(Offset):
        def forward(self, s, t, mask=None):
            out = super().forward(s, t)
            out.item()
            return out

    teacher = LiveTeacher(tiny_model(seed=1), FAMILY, CUDA, "bf16")
    with pytest.raises(RuntimeError, match="synchroniz"):
        run_checked(monkeypatch, tracker, Objective(0.5, [Term("offset", 0.5, Syncing())]), teacher, CUDA)


def test_nan_skip_on_cuda(tracker):
    from tests.test_trainer import Counting

    model = tiny_model()
    result = train(model, ToyData(), FAMILY, Objective(1.0, [Term("bad", 1.0, Counting(nan_at=2))]),
                   settings(max_steps=3, batch_size=4, on_nan="skip"), tracker, "test", CUDA, "bf16",
                   teacher_outputs=LiveTeacher(tiny_model(seed=1), FAMILY, CUDA, "bf16"))
    assert result.skipped_steps == 1 and all(torch.isfinite(p).all() for p in model.parameters())


def test_fused_adamw_and_pinned_batches_on_cuda(tracker, monkeypatch):
    made = {}
    real_adamw, real_loader = torch.optim.AdamW, torch.utils.data.DataLoader

    def adamw(*a, **k):
        made["fused"] = k.get("fused")
        return real_adamw(*a, **k)

    def loader(*a, **k):
        made["pin_memory"] = k.get("pin_memory")
        return real_loader(*a, **k)

    monkeypatch.setattr(torch.optim, "AdamW", adamw)
    monkeypatch.setattr(torch.utils.data, "DataLoader", loader)
    train(tiny_model(), ToyData(), FAMILY, fine_tune_objective(), settings(max_steps=2), tracker, "test", CUDA)
    assert made == {"fused": True, "pin_memory": True}


def test_resume_on_cuda_continues_exactly(tracker, tmp_path):
    """6 steps, stop, resume to 12 == 12 steps straight, on the GPU (dropout on, bf16)."""
    straight = tiny_model(dropout=0.1)
    train(straight, ToyData(), FAMILY, fine_tune_objective(), settings(max_steps=12, batch_size=8),
          tracker, "test", CUDA, "bf16")
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(dropout=0.1), ToyData(), FAMILY, fine_tune_objective(),
              settings(max_steps=12, batch_size=8, save_every=6, eval_strategy="steps", eval_every=7),
              tracker, "test", CUDA, "bf16", checkpoint_dir=ckpt, evaluate=_interrupt)
    resumed = tiny_model(seed=5, dropout=0.1)
    result = train(resumed, ToyData(), FAMILY, fine_tune_objective(), settings(max_steps=12, batch_size=8),
                   tracker, "test", CUDA, "bf16", checkpoint_dir=ckpt, resume=True)
    assert result.steps == 12
    for pa, pb in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-5)


def distil_bf16(family: str, cache_dir, tracker, device: torch.device, precision: str) -> list:
    """Four KD steps of a tiny teacher / student pair of ``family``; the logged losses."""
    kd = Objective(0.5, [Term("kd", 0.5, divergences.get("kd", temperature=2.0))])
    if family == "encoder":
        student, data, fam = tiny_model(), ToyData(), FAMILY
        teacher_model = tiny_model(seed=1)
    else:
        from tests.families.famtools import make_pair

        pair = make_pair(family, cache_dir)
        student, data, fam, teacher_model = pair.student.model, pair.dataset, pair.family, pair.teacher.model
    teacher = LiveTeacher(teacher_model, fam, device, precision)
    train(student, data, fam, kd, settings(max_steps=4, batch_size=3, log_every=1), tracker, "test", device,
          precision, teacher_outputs=teacher)
    return [r["test/loss"] for r in _rows(tracker)]


@pytest.mark.parametrize("family", ["encoder", "seq2seq", "causal"])
def test_bf16_autocast_end_to_end(family, cache_dir, tmp_path):
    """bf16 on CUDA: finite losses that follow the float32 CPU run within bf16's precision."""
    losses = {}
    for name, device, precision in (("cpu", torch.device("cpu"), "fp32"), ("cuda", CUDA, "bf16")):
        tr = Tracker(LoggerConfig(backend="none", mode="disabled"), tmp_path / name, {})
        losses[name] = distil_bf16(family, cache_dir, tr, device, precision)
        tr.finish()
    assert all(math.isfinite(v) for v in losses["cuda"]) and len(losses["cuda"]) == 4
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=5e-2, abs=5e-2)


def test_compile_on_cuda_gives_the_eager_losses(tmp_path):
    losses = {}
    for flag in (False, True):
        tr = Tracker(LoggerConfig(backend="none", mode="disabled"), tmp_path / str(flag), {})
        train(tiny_model(), ToyData(), FAMILY, fine_tune_objective(), settings(max_steps=4), tr, "test", CUDA,
              compile=flag)
        tr.finish()
        losses[flag] = [r["test/loss"] for r in _rows(tr)]
    assert losses[True] == pytest.approx(losses[False], rel=1e-3, abs=1e-4)
