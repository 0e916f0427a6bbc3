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


@pytest.fixture
def tracker(tmp_path):
    t = Tracker(LoggerConfig(backend="none", mode="disabled"), tmp_path / "run", {})
    yield t
    t.finish()


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
