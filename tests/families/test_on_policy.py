"""On-policy distillation in the seq2seq and causal families (``kdlab.on_policy``): which rows
are generated, that sampling never reaches the gradient, and that the teacher scores the
generated answer tokens only."""

from typing import List

import pytest
import torch
from famtools import Pair

from kdlab import divergences
from kdlab.config import OnPolicyConfig
from kdlab.families import tokens as tk
from kdlab.families.generation import Sampling, cut_at_eos, select_rows
from kdlab.objective import Objective, Term
from kdlab.on_policy import OnPolicy


def sampling(p: Pair, max_new_tokens: int = 4) -> Sampling:
    tok = p.student.tokenizer
    return Sampling(temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens, eos_id=tk.eos_id(tok),
                    pad_id=tk.pad_id(tok))


def on_policy(p: Pair, lmbda: float, seed: int = 0) -> OnPolicy:
    return OnPolicy(OnPolicyConfig(lmbda=lmbda), p.family, sampling(p), seed)


class Spy:
    """Wraps the student's ``generate``: records each call's inputs, mode and output."""

    def __init__(self, model: torch.nn.Module, monkeypatch) -> None:
        self.calls: List[dict] = []
        original = model.generate

        def generate(**kwargs):
            out = original(**kwargs)
            self.calls.append({"input_ids": kwargs["input_ids"], "training": model.training,
                               "grad_enabled": torch.is_grad_enabled(), "out": out})
            return out

        monkeypatch.setattr(model, "generate", generate)


def test_lmbda_zero_never_calls_generate(pair: Pair, monkeypatch):
    p = pair

    def refuse(**kwargs):
        raise AssertionError("generate called with lmbda=0")

    monkeypatch.setattr(p.student.model, "generate", refuse)
    op = on_policy(p, 0.0)
    for counter in range(20):
        assert op(p.student.model, p.batch, counter) is p.batch  # gold answers, untouched


def test_lmbda_one_generates_every_target_in_eval_mode_without_gradient(pair: Pair, monkeypatch):
    p = pair
    model = p.student.model
    model.train()
    spy = Spy(model, monkeypatch)
    torch.manual_seed(0)
    out = on_policy(p, 1.0)(model, p.batch, counter=3)
    (call,) = spy.calls
    n = p.batch["labels"].shape[0]
    assert call["input_ids"].shape[0] == n  # every row sampled
    assert not call["training"] and not call["grad_enabled"]  # eval mode, no_grad
    assert model.training  # back to train mode after
    assert call["out"].grad_fn is None and not call["out"].requires_grad
    assert not out["has_label"].any()  # no gold answer left: no cross-entropy on any row
    # each row's target is what the student generated, cut after its first EOS
    generated = call["out"][:, call["input_ids"].shape[1]:] if p.family.name == "causal" else call["out"][:, 1:]
    expected = cut_at_eos(generated, sampling(p).eos_id)
    got = [t[m].tolist() for t, m in zip(out["target_ids"], out["target_mask"], strict=True)]
    assert got == expected
    assert all(not v.requires_grad for v in out.values())
    assert all(q.grad is None for q in model.parameters())  # sampling left no gradient


def test_gradients_come_from_the_scoring_forward_only(pair: Pair, monkeypatch):
    p = pair
    model = p.student.model
    model.train()
    torch.manual_seed(1)
    batch = on_policy(p, 1.0)(model, p.batch, counter=0)
    assert all(q.grad is None for q in model.parameters())
    objective = Objective(0.0, [Term("js", 1.0, divergences.get("js", beta=0.5))])
    with torch.no_grad():
        teacher = p.family.forward(p.teacher.model, batch)  # the teacher scores the student's answers
    student = p.family.forward(model, batch)
    loss, _ = objective(student, p.family.supervised_loss(student, batch), teacher, labels=batch["labels"],
                        has_label=batch["has_label"])
    loss.backward()
    assert loss.item() > 0
    assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in model.parameters())
    assert all(q.grad is None for q in p.teacher.model.parameters())


def fixed_generate(p: Pair, monkeypatch, answers: List[List[int]]):
    """Make the student's ``generate`` return ``answers`` (padded as ``generate`` pads a row that
    finished early), after the prompt (causal) or the decoder start (seq2seq)."""
    pad = sampling(p).pad_id

    def generate(input_ids, attention_mask, **kwargs):
        width = max(len(a) for a in answers)
        tail = torch.tensor([a + [pad] * (width - len(a)) for a in answers[:input_ids.shape[0]]])
        head = input_ids if p.family.name == "causal" else input_ids.new_zeros((input_ids.shape[0], 1))
        return torch.cat([head, tail], dim=1)

    monkeypatch.setattr(p.student.model, "generate", generate)


def test_teacher_scores_generated_answers_with_prompt_and_padding_after_eos_masked(pair: Pair, monkeypatch):
    p = pair
    eos = sampling(p).eos_id
    # row 0: two tokens then EOS, then junk the sampler would have padded; rows 1, 2: longer / no EOS
    answers = [[2023, 2003, eos, 2023, 2003], [2054, eos], [2003, 2023, 2054, 2003, 2023]]
    fixed_generate(p, monkeypatch, answers)
    out = p.family.generated_batch(p.student.model, p.batch, torch.ones(3, dtype=torch.bool),
                                   sampling(p, max_new_tokens=5))
    kept = [[2023, 2003, eos], [2054, eos], [2003, 2023, 2054, 2003, 2023]]  # up to the first EOS
    assert out["target_mask"].sum(-1).tolist() == [len(a) for a in kept]
    with torch.no_grad():
        scored = p.family.forward(p.teacher.model, out)
    assert torch.equal(scored.mask, out["target_mask"])  # the loss mask: answer tokens only
    for i, answer in enumerate(kept):
        assert out["target_ids"][i][out["target_mask"][i]].tolist() == answer
    if p.family.name == "causal":  # the teacher reads prompt + answer; the mask is 0 on the prompt
        for i, answer in enumerate(kept):
            real = out["input_ids"][i][out["attention_mask"][i].bool()].tolist()
            gold_prompt = p.dataset.prompts[i]
            assert real == gold_prompt + answer
            # the mask window covers the last len(answer) positions of the sequence, nothing before
            assert scored.mask.shape[1] == max(len(a) for a in kept)
            assert scored.mask[i].tolist() == [False] * (scored.mask.shape[1] - len(answer)) + [True] * len(answer)
    else:  # the source is the encoder's input, untouched; padding after EOS masked on the right
        assert torch.equal(out["input_ids"], p.batch["input_ids"])
        for i, answer in enumerate(kept):
            assert out["target_mask"][i].tolist() == [True] * len(answer) + [False] * (5 - len(answer))


def test_only_drawn_rows_change(pair: Pair, monkeypatch):
    p = pair
    fixed_generate(p, monkeypatch, [[2023, sampling(p).eos_id]] * 3)
    rows = torch.tensor([False, True, False])
    out = p.family.generated_batch(p.student.model, p.batch, rows, sampling(p))
    for i in (0, 2):  # gold answers kept
        gold = p.batch["target_ids"][i][p.batch["target_mask"][i]].tolist()
        assert out["target_ids"][i][out["target_mask"][i]].tolist() == gold
    assert out["target_ids"][1][out["target_mask"][1]].tolist() == [2023, sampling(p).eos_id]


def test_row_selection_is_seeded_by_run_seed_and_micro_batch():
    first = [select_rows(16, 0.3, seed=7, counter=c) for c in range(200)]
    torch.manual_seed(123)
    torch.rand(10)  # the global RNG moves: the draw does not
    again = [select_rows(16, 0.3, seed=7, counter=c) for c in range(200)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(first, first[1:], strict=False))  # micro-batches differ
    other = [select_rows(16, 0.3, seed=8, counter=c) for c in range(200)]
    assert any(not torch.equal(a, b) for a, b in zip(first, other, strict=True))  # seeds differ
    counts = [int(r.sum()) for r in first]
    assert set(counts) == {4, 5}  # 0.3 * 16 = 4.8: 4 or 5 rows, never more or fewer
    assert abs(sum(counts) / len(counts) - 4.8) < 0.15  # the expected share is lmbda
    assert all(select_rows(5, 1.0, 0, c).all() for c in range(10))
    assert not any(select_rows(5, 0.0, 0, c).any() for c in range(10))


def test_two_runs_with_the_same_seed_generate_the_same_batches(pair: Pair):
    p = pair

    def batches():
        torch.manual_seed(0)  # sampling reads the global RNG, which the run seeds and checkpoints
        op = on_policy(p, 0.5, seed=3)
        return [op(p.student.model, p.batch, c) for c in range(4)]

    for a, b in zip(batches(), batches(), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_adaptive_schedule_raises_lmbda_when_the_dev_loss_goes_up(pair: Pair):
    losses = iter([1.0, 1.05, 1.2, 1.1, 1.35, 2.0, 3.0])
    cfg = OnPolicyConfig(lmbda=0.0, schedule="adaptive", lmbda_step=0.1, loss_eps=0.1)
    op = OnPolicy(cfg, pair.family, sampling(pair), 0, dev_loss=lambda model: next(losses))
    op.start(pair.student.model)
    assert op.reference == 1.0 and op.lmbda == 0.0
    seen = [op.after_evaluation(pair.student.model)["on_policy/lmbda"] for _ in range(4)]
    assert seen == pytest.approx([0.0, 0.1, 0.1, 0.2])  # up at 1.2 (>= 1.0 + 0.1) and 1.35 (>= 1.2 + 0.1)
    resumed = OnPolicy(cfg, pair.family, sampling(pair), 0, dev_loss=lambda model: next(losses))
    resumed.load_state_dict(op.state_dict())
    resumed.start(pair.student.model)  # a resumed run keeps its reference
    assert resumed.reference == 1.35 and resumed.lmbda == pytest.approx(0.2)
    assert resumed.after_evaluation(pair.student.model)["on_policy/lmbda"] == pytest.approx(0.3)  # 2.0


def test_an_interrupted_run_resumes_into_the_same_weights_and_schedule(pair: Pair, tmp_path):
    """6 steps under the adaptive schedule, killed after the step-4 checkpoint and resumed ==
    6 steps straight: drawn rows, samples, lmbda, reference loss and weights."""
    import copy

    from kdlab.config import LoggerConfig
    from kdlab.on_policy import dev_loss
    from kdlab.teacher_outputs import LiveTeacher
    from kdlab.tracking import Tracker
    from kdlab.trainer import LoopSettings, train

    p, cpu = pair, torch.device("cpu")
    init = copy.deepcopy(p.student.model.state_dict())
    objective = Objective(0.0, [Term("js", 1.0, divergences.get("js", beta=0.5))])
    # loss_eps < 0 (below what the config accepts): lmbda rises at every evaluation whatever the loss
    cfg = OnPolicyConfig(lmbda=0.25, schedule="adaptive", lmbda_step=0.125, loss_eps=-10.0)

    def fit(checkpoint_dir=None, resume=False, stop_at=None):
        model = copy.deepcopy(p.student.model)
        model.load_state_dict(init)
        op = OnPolicy(cfg, p.family, sampling(p), 0, lambda m: dev_loss(p.family, m, p.dataset, 3, cpu, "fp32"))
        calls = []

        def evaluate(m):
            calls.append(1)
            if len(calls) == stop_at:
                raise KeyboardInterrupt  # a kill after the step-4 checkpoint
            return {}

        tracker = Tracker(LoggerConfig(backend="none", mode="disabled"), tmp_path / f"run{len(list(tmp_path.iterdir()))}", {})
        try:
            train(model, p.dataset, p.family, objective,
                  LoopSettings(max_steps=6, batch_size=2, lr=1e-3, log_every=1, progress=False, save_every=2,
                               eval_strategy="steps", eval_every=1),
                  tracker, "student", cpu, teacher_outputs=LiveTeacher(p.teacher.model, p.family, cpu, "fp32"),
                  evaluate=evaluate, checkpoint_dir=checkpoint_dir, resume=resume, on_policy=op)
        finally:
            tracker.finish()
        return model, op

    torch.manual_seed(0)
    straight, op_straight = fit(tmp_path / "a")
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "b", stop_at=5)
    torch.manual_seed(1)  # everything must come from the checkpoint
    resumed, op_resumed = fit(tmp_path / "b", resume=True)
    assert op_resumed.state_dict() == op_straight.state_dict()
    assert op_straight.lmbda == 1.0  # 0.25 + 6 * 0.125, capped: its restore is tested
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
