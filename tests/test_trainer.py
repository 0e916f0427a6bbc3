"""The training loop on a tiny model: accumulation, NaN policy, checkpoints, resume."""

import errno
import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from kdlab import checkpoint
from kdlab.config import LoggerConfig
from kdlab.errors import ResourceError
from kdlab.families import get_family
from kdlab.objective import Objective, Term, fine_tune_objective
from kdlab.tracking import Tracker
from kdlab.trainer import LoopSettings, train

FAMILY = get_family("encoder")


class ToyData(torch.utils.data.Dataset):
    """Fixed-length random token sequences with labels from a simple rule."""

    def __init__(self, n=32, length=6, vocab=50, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, vocab, (n, length), generator=g)
        self.labels = (self.ids[:, 0] > vocab // 2).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return i

    def collate(self, idx):
        idx = torch.tensor(idx)
        ids = self.ids[idx]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[idx], "index": idx}


def tiny_model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                     max_position_embeddings=16, num_labels=2)
    return BertForSequenceClassification(cfg)


def settings(**kw):
    base = dict(epochs=1, max_steps=3, batch_size=8, lr=1e-3, log_every=1, progress=False)
    return LoopSettings(**{**base, **kw})


def run(model, tracker, objective=None, teacher=None, **kw):
    return train(model, ToyData(), FAMILY, objective or fine_tune_objective(), settings(**kw), tracker,
                 "test", torch.device("cpu"), teacher_outputs=teacher)


def test_accumulation_equals_a_larger_batch(tracker):
    """batch 8 x 1 micro-step == batch 2 x 4 micro-steps, for CE and for KD."""
    teacher_model = tiny_model(seed=1).eval()

    def teacher(batch):
        with torch.no_grad():
            return FAMILY.forward(teacher_model, batch)

    from kdlab import divergences

    for objective in (fine_tune_objective(),
                      Objective(0.5, [Term("kd", 0.5, divergences.get("kd", temperature=2.0))])):
        a, b = tiny_model(), tiny_model()
        run(a, tracker, objective, teacher, max_steps=3, batch_size=8, grad_accum=1)
        run(b, tracker, objective, teacher, max_steps=3, batch_size=2, grad_accum=4)
        for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
            assert torch.allclose(pa, pb, atol=1e-5, rtol=1e-4), name


def test_a_different_batch_changes_the_result(tracker):
    """The equivalence above is not vacuous: a different batch split changes the result."""
    a, b = tiny_model(), tiny_model()
    run(a, tracker, max_steps=3, batch_size=8, grad_accum=1)
    run(b, tracker, max_steps=3, batch_size=4, grad_accum=1)
    assert not all(torch.allclose(pa, pb) for pa, pb in zip(a.parameters(), b.parameters(), strict=True))


class NaNAt(torch.nn.Module):
    """A term that returns NaN on its ``at``-th call."""

    def __init__(self, at):
        super().__init__()
        self.calls, self.at, self.temperature = 0, at, 1.0

    def forward(self, s, t, mask=None):
        self.calls += 1
        return s.sum() * (math.nan if self.calls == self.at else 0.0)


def test_nan_stops_without_writing_a_checkpoint(tracker, tmp_path):
    objective = Objective(1.0, [Term("bad", 1.0, NaNAt(3))])
    ckpt = tmp_path / "ckpt"
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 3.*trainer.on_nan=skip"):
        train(tiny_model(), ToyData(), FAMILY, objective, settings(max_steps=4, batch_size=4, save_every=1),
              tracker, "test", torch.device("cpu"), teacher_outputs=lambda b: FAMILY.forward(tiny_model(1), b),
              checkpoint_dir=ckpt)
    assert [p.name for p in checkpoint.list_checkpoints(ckpt)] == ["step-00000001", "step-00000002"]


def test_nan_skip_policy_skips_the_step(tracker):
    objective = Objective(1.0, [Term("bad", 1.0, NaNAt(2))])
    result = train(tiny_model(), ToyData(), FAMILY, objective, settings(max_steps=3, batch_size=4, on_nan="skip"),
                   tracker, "test", torch.device("cpu"), teacher_outputs=lambda b: FAMILY.forward(tiny_model(1), b))
    assert result.steps == 3 and result.skipped_steps == 1


def test_resume_continues_exactly(tracker, tmp_path):
    """6 steps, stop, resume to 12 == 12 steps straight (weights, optimizer, data order, RNG).

    Dropout is on, so the dropout masks after resuming must match too."""
    straight = tiny_model(dropout=0.1)
    train(straight, ToyData(), FAMILY, fine_tune_objective(), settings(max_steps=12, batch_size=8),
          tracker, "test", torch.device("cpu"))
    ckpt = tmp_path / "ckpt"
    first = tiny_model(dropout=0.1)
    with pytest.raises(KeyboardInterrupt):
        train(first, ToyData(), FAMILY, fine_tune_objective(),
              settings(max_steps=12, batch_size=8, save_every=6, eval_strategy="steps", eval_every=7),
              tracker, "test", torch.device("cpu"), checkpoint_dir=ckpt, evaluate=_interrupt)
    resumed = tiny_model(seed=5, dropout=0.1)  # different init: everything must come from the checkpoint
    result = train(resumed, ToyData(), FAMILY, fine_tune_objective(), settings(max_steps=12, batch_size=8),
                   tracker, "test", torch.device("cpu"), checkpoint_dir=ckpt, resume=True)
    assert result.steps == 12
    for pa, pb in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)


def _interrupt(model):
    raise KeyboardInterrupt  # stands in for a kill at step 7, after the step-6 checkpoint


def test_corrupt_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
    d = tmp_path / "ckpt"
    checkpoint.save(d, 1, {"x": torch.ones(2)}, {}, keep_last=3)
    newest = checkpoint.save(d, 2, {"x": torch.zeros(2)}, {}, keep_last=3)
    with open(newest / checkpoint.STATE, "r+b") as f:  # a torn write
        f.truncate(10)
    state = checkpoint.load_latest(d)
    assert torch.equal(state["x"], torch.ones(2)) and state["meta"]["step"] == 1
    assert "corrupt or partial" in caplog.text


def test_full_disk_keeps_previous_checkpoints(tmp_path, monkeypatch):
    d = tmp_path / "ckpt"
    checkpoint.save(d, 1, {"x": torch.ones(2)}, {}, keep_last=2)

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(ResourceError, match="No space left.*previous checkpoints are intact"):
        checkpoint.save(d, 2, {"x": torch.zeros(2)}, {}, keep_last=2)
    monkeypatch.undo()
    assert [p.name for p in checkpoint.list_checkpoints(d)] == ["step-00000001"]
    assert not [p for p in d.iterdir() if p.name.startswith(".tmp")]


def test_resume_from_an_incompatible_config_is_refused(tmp_path):
    from kdlab.errors import ConfigError

    d = tmp_path / "ckpt"
    checkpoint.save(d, 1, {"x": 1}, {"config": {"trainer.lr": 1e-3, "seed": 0}}, keep_last=2)
    with pytest.raises(ConfigError, match=r"different configuration \(changed: trainer.lr\)"):
        checkpoint.load_latest(d, {"trainer.lr": 5e-5, "seed": 0})


def test_sound_sinkhorn_diagnostics_are_logged(tracker):
    """Numeric diagnostics of a term reach metrics.jsonl; labels (the backend) are skipped."""
    import json

    from kdlab import divergences

    teacher_model = tiny_model(seed=1).eval()
    objective = Objective(0.5, [Term("sinkhorn", 0.8, divergences.get("sinkhorn", mode="sound"))])
    train(tiny_model(), ToyData(), FAMILY, objective, settings(max_steps=2, batch_size=8), tracker, "test",
          torch.device("cpu"), teacher_outputs=lambda b: FAMILY.forward(teacher_model, b))
    rows = [json.loads(line) for line in (tracker.run_dir / "metrics.jsonl").read_text().splitlines()]
    stats = {k for r in rows for k in r if k.startswith("test/sinkhorn/")}
    assert stats and all(isinstance(rows[-1][k], float) for k in stats if k in rows[-1])


def test_throughput_is_the_last_logging_window(tracker, monkeypatch):
    """A slow first step (warm-up) leaves ``samples_per_s`` after one window; the phase
    average keeps it and is logged as ``samples_per_s_cumulative``."""
    import json

    clock = {"now": 100.0}
    monkeypatch.setattr("kdlab.trainer.time.perf_counter", lambda: clock["now"])
    durations = iter([10.0, 1.0, 1.0, 1.0])  # seconds per step: warm-up, then steady

    class Clocked:
        def __getattr__(self, name):
            return getattr(FAMILY, name)

        def forward(self, model, batch):
            clock["now"] += next(durations)
            return FAMILY.forward(model, batch)

    train(tiny_model(), ToyData(), Clocked(), fine_tune_objective(), settings(max_steps=4, batch_size=8, log_every=2),
          tracker, "test", torch.device("cpu"))
    rows = [json.loads(line) for line in (tracker.run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [(r["test/samples_per_s"], r["test/samples_per_s_cumulative"]) for r in rows if "test/samples_per_s" in r]
    assert rates == [pytest.approx((16 / 11, 16 / 11)), pytest.approx((16 / 2, 32 / 13))]


# -- the hot path: no host synchronisation between logging steps ---------------------------

SYNCS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


class Offset(torch.nn.Module):
    """A distillation term without host synchronisation: mean squared logit difference."""

    temperature = 1.0

    def forward(self, s, t, mask=None):
        return ((s - t) ** 2).mean()


def syncs_per_step(monkeypatch, tracker, objective, teacher=None, steps=6, **kw):
    """Run ``steps`` optimiser steps logging only at the last; returns the number of
    host-synchronising tensor calls made in each step before it (from its forward to the
    next step's forward)."""
    counts = []

    class Marking:
        def __getattr__(self, name):
            return getattr(FAMILY, name)

        def forward(self, model, batch):
            counts.append(0)
            return FAMILY.forward(model, batch)

    # The model's own check (transformers' SDPA mask: skipped when nothing is padded, which
    # it asks with ``mask.all()``) is the same in any loop; it is not the trainer's.
    monkeypatch.setattr("transformers.masking_utils._ignore_bidirectional_mask_sdpa", lambda *a, **k: False)
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            if counts:
                counts[-1] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    train(tiny_model(), ToyData(), Marking(), objective, settings(max_steps=steps, batch_size=4, log_every=1000, **kw),
          tracker, "test", torch.device("cpu"), teacher_outputs=teacher)
    monkeypatch.undo()
    return counts[:-1]  # the last step logs


@pytest.mark.parametrize("on_nan", ["stop", "skip"])
def test_steps_between_logs_do_not_synchronise(monkeypatch, tracker, on_nan):
    """Fine-tuning, and distillation from cached teacher outputs: no ``.item()``,
    ``float(t)``, ``bool(t)``, ``.tolist()``, ``.cpu()`` between logging steps."""
    from kdlab.teacher_outputs import CachedTeacher

    logits = FAMILY.forward(tiny_model(seed=1).eval(), ToyData().collate(list(range(32)))).logits.detach().numpy()
    assert syncs_per_step(monkeypatch, tracker, fine_tune_objective(), on_nan=on_nan) == [0] * 5
    kd = Objective(0.5, [Term("offset", 0.5, Offset())])
    assert syncs_per_step(monkeypatch, tracker, kd, CachedTeacher(logits), on_nan=on_nan) == [0] * 5


def test_the_sync_count_sees_a_synchronisation(monkeypatch, tracker):
    """The count above is not vacuous: a term calling ``.item()`` is seen at every step."""

    class Syncing(Offset):
        def forward(self, s, t, mask=None):
            out = super().forward(s, t)
            out.item()
            return out

    teacher_model = tiny_model(seed=1).eval()
    objective = Objective(0.5, [Term("offset", 0.5, Syncing())])
    counts = syncs_per_step(monkeypatch, tracker, objective, lambda b: FAMILY.forward(teacher_model, b))
    assert counts == [1] * 5


class Counting(torch.nn.Module):
    """A term whose value is its call number (1, 2, ...), NaN on call ``nan_at``."""

    temperature = 1.0

    def __init__(self, nan_at=0):
        super().__init__()
        self.calls, self.nan_at = 0, nan_at

    def forward(self, s, t, mask=None):
        self.calls += 1
        return s.sum() * 0.0 + (math.nan if self.calls == self.nan_at else float(self.calls))


def _rows(tracker):
    import json

    return [json.loads(line) for line in (tracker.run_dir / "metrics.jsonl").read_text().splitlines()]


def test_logged_terms_are_means_over_the_logging_window(tracker):
    objective = Objective(0.0, [Term("count", 1.0, Counting())])
    train(tiny_model(), ToyData(), FAMILY, objective, settings(max_steps=4, batch_size=4, log_every=2), tracker,
          "test", torch.device("cpu"), teacher_outputs=lambda b: FAMILY.forward(tiny_model(1), b))
    assert [r["test/count"] for r in _rows(tracker)] == [1.5, 3.5]


def test_nan_stop_is_reported_at_the_next_logging_step(tracker):
    """stop: the flagged step is named when the flags are read (the next logging step);
    the step itself changed nothing, so the weights stay finite."""
    model = tiny_model()
    objective = Objective(1.0, [Term("bad", 1.0, Counting(nan_at=2))])
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 2 \(ce=.*bad=nan, loss=nan\)"):
        train(model, ToyData(), FAMILY, objective, settings(max_steps=6, batch_size=4, log_every=4), tracker,
              "test", torch.device("cpu"), teacher_outputs=lambda b: FAMILY.forward(tiny_model(1), b))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert _rows(tracker) == []  # raised before logging step 4


def _reference(batches):
    """``tiny_model`` after fused AdamW steps on the trainer's batches ``batches`` (indices
    into its first epoch) under the trainer's 3-step linear schedule."""
    model, data = tiny_model(), ToyData()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-8, fused=True)
    order = torch.randperm(32, generator=torch.Generator().manual_seed(0)).tolist()
    for i in batches:
        batch = data.collate(order[4 * i:4 * i + 4])
        torch.nn.functional.cross_entropy(FAMILY.forward(model, batch).logits, batch["labels"]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for g in opt.param_groups:
            g["lr"] = 1e-3 * (1 - i / 3)
        opt.step()
        opt.zero_grad()
    return model


def test_nan_skip_leaves_the_step_out_on_the_device(tracker, caplog):
    """skip: the flagged step leaves weights and AdamW's state untouched: the run equals
    fused AdamW on batches 1 and 3 alone (the skipped step still counts in the schedule)."""
    objective = Objective(1.0, [Term("bad", 1.0, Counting(nan_at=2))])
    skipped = tiny_model()
    result = train(skipped, ToyData(), FAMILY, objective, settings(max_steps=3, batch_size=4, on_nan="skip",
                   log_every=1000), tracker, "test", torch.device("cpu"),
                   teacher_outputs=lambda b: FAMILY.forward(tiny_model(1), b))
    assert result.steps == 3 and result.skipped_steps == 1
    assert "non-finite loss (ce=" in caplog.text and "step 2" in caplog.text

    def close(a, b):  # Adam's normalised updates amplify rounding: 2e-5 between equal runs here
        return all(torch.allclose(pa, pb, atol=1e-4) for pa, pb in zip(a.parameters(), b.parameters(), strict=True))

    assert close(skipped, _reference([0, 2]))
    assert not close(skipped, _reference([0, 1, 2]))  # one more update is visible


# -- hardware.compile ---------------------------------------------------------------------

def _losses(tracker):
    return [r["test/loss"] for r in _rows(tracker) if "test/loss" in r]


def test_compile_that_fails_warns_once_and_trains_eagerly(tmp_path, monkeypatch, caplog):
    """A platform that cannot compile: one warning, then the eager forward, same result."""
    calls = []

    def broken_compile(module, **kw):
        def run(*a, **k):
            calls.append(1)
            raise RuntimeError("no C++ compiler found\nmore detail")
        return run

    trackers = [Tracker(LoggerConfig(backend="none", mode="disabled"), tmp_path / name, {}) for name in ("e", "c")]
    eager, compiled = tiny_model(), tiny_model()
    train(eager, ToyData(), FAMILY, fine_tune_objective(), settings(max_steps=3), trackers[0], "test",
          torch.device("cpu"))
    monkeypatch.setattr(torch, "compile", broken_compile)
    train(compiled, ToyData(), FAMILY, fine_tune_objective(), settings(max_steps=3), trackers[1], "test",
          torch.device("cpu"), compile=True)
    assert len(calls) == 1 and caplog.text.count("torch.compile failed on this platform (RuntimeError: "
                                                 "no C++ compiler found)") == 1
    for pa, pb in zip(eager.parameters(), compiled.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.slow
def test_compile_gives_the_eager_losses(tmp_path, caplog):
    """torch.compile of the student (inductor, C++ on CPU): the same losses as eager, and
    the module's own state dict (no ``_orig_mod.`` prefix)."""
    trackers = [Tracker(LoggerConfig(backend="none", mode="disabled"), tmp_path / name, {}) for name in ("e", "c")]
    eager, compiled = tiny_model(), tiny_model()
    for model, tr, flag in ((eager, trackers[0], False), (compiled, trackers[1], True)):
        train(model, ToyData(), FAMILY, fine_tune_objective(), settings(max_steps=4), tr, "test",
              torch.device("cpu"), compile=flag)
        tr.finish()
    assert "torch.compile failed" not in caplog.text  # it compiled (2 minutes here)
    assert _losses(trackers[1]) == pytest.approx(_losses(trackers[0]), rel=1e-4, abs=1e-5)
    assert list(compiled.state_dict()) == list(eager.state_dict())


def test_a_run_may_resume_with_compile_switched():
    """hardware.compile changes how, not what, is computed: not a different configuration."""
    from kdlab.metadata import config_for_resume

    run = {"hardware": {"device": "cpu", "compile": False}, "trainer": {"lr": 1e-3}}
    assert config_for_resume(run) == config_for_resume({**run, "hardware": {"device": "cpu", "compile": True}})
    assert config_for_resume(run) != config_for_resume({**run, "trainer": {"lr": 1e-4}})


def test_skipped_steps_survive_a_resume(tracker, tmp_path):
    """A step skipped before the checkpoint is still counted after resuming from it."""
    teacher = lambda b: FAMILY.forward(tiny_model(1), b)  # noqa: E731
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(), ToyData(), FAMILY, Objective(1.0, [Term("bad", 1.0, Counting(nan_at=2))]),
              settings(max_steps=6, batch_size=4, on_nan="skip", save_every=3, eval_strategy="steps",
                       eval_every=4), tracker, "test", torch.device("cpu"), teacher_outputs=teacher,
              checkpoint_dir=ckpt, evaluate=_interrupt)
    result = train(tiny_model(), ToyData(), FAMILY, Objective(1.0, [Term("bad", 1.0, Counting())]),
                   settings(max_steps=6, batch_size=4, on_nan="skip"), tracker, "test", torch.device("cpu"),
                   teacher_outputs=teacher, checkpoint_dir=ckpt, resume=True)
    assert result.steps == 6 and result.skipped_steps == 1
