"""TED on tiny BERT encoders: filter placement, the stage II term by hand, where gradients
flow, stage I (frozen models, loss averaged over filters, cached) and its preconditions."""

from __future__ import annotations

import pytest
import torch

from kdlab.config import LoopConfig
from kdlab.errors import ConfigError
from kdlab.families import get_family
from kdlab.features import FEATURE_TERMS
from kdlab.methods.ted import FilterProbe, ProbeFamily, filter_layers, stage_one
from kdlab.objective import build_objective, fine_tune_objective
from kdlab.terms import StageContext
from kdlab.tracking import NullTracker
from kdlab.trainer import LoopSettings, train
from tests.conftest import compose_config
from tests.methods.test_feature_methods import BATCH, STACKS, bert, outputs


def test_filter_layers_follow_the_authors_placement():
    # the authors' layer i (0-based) gets a filter when (i + 1) % interval == 0: block outputs
    assert filter_layers(12, 1) == list(range(1, 13))
    assert filter_layers(12, 3) == [3, 6, 9, 12]
    assert filter_layers(6, 4) == [4]
    with pytest.raises(ConfigError, match="interval 0"):
        filter_layers(6, 0)


def test_filter_counts_must_match():
    term = FEATURE_TERMS.build("ted", teacher_interval=1, student_interval=1)
    with pytest.raises(ConfigError, match="teacher_interval=1 gives 4 filters.*student_interval=1 gives 2"):
        term.bind(bert(4), bert(2), STACKS)
    FEATURE_TERMS.build("ted", teacher_interval=2).bind(bert(4), bert(2), STACKS)


def bound(mask_padding=False, nonlinear=False, widths=(16, 8)):
    teacher, student = bert(4, hidden=widths[0]), bert(2, hidden=widths[1], seed=1)
    term = FEATURE_TERMS.build("ted", teacher_interval=2, mask_padding=mask_padding, nonlinear=nonlinear)
    term.bind(teacher, student, STACKS)  # float32 filters on float64 models: the term computes in float32
    term.trained = True
    return term, teacher, student


def run(term, teacher, student):
    return term(*outputs(teacher, student))


def hand_value(term, teacher, student, mask_padding):
    """``mean_k mean (W_s h_s + b_s - (W_t h_t + b_t))^2`` written out element by element."""
    with torch.no_grad():
        h_t = teacher(**BATCH, output_hidden_states=True).hidden_states
        h_s = student(**BATCH, output_hidden_states=True).hidden_states
    mask = BATCH["attention_mask"]
    per_filter = []
    for k, (lt, ls) in enumerate([[2, 1], [4, 2]]):
        f_s, f_t = term.student_bank.filters[k], term.teacher_bank.filters[k]
        total, n = 0.0, 0
        for b in range(2):
            for i in range(5):
                if mask_padding and not mask[b, i]:
                    continue
                s = [sum(f_s.weight[o, j].item() * h_s[ls][b, i, j].item() for j in range(8)) + f_s.bias[o].item()
                     for o in range(16)]
                t = [sum(f_t.weight[o, j].item() * h_t[lt][b, i, j].item() for j in range(16)) + f_t.bias[o].item()
                     for o in range(16)]
                total += sum((x - y) ** 2 for x, y in zip(s, t, strict=True))
                n += 16
        per_filter.append(total / n)
    return sum(per_filter) / len(per_filter)


@pytest.mark.parametrize("mask_padding", [False, True])
def test_stage_two_term_by_hand(mask_padding):
    term, teacher, student = bound(mask_padding)
    assert term.pairs == [[2, 1], [4, 2]]  # teacher blocks 2, 4; student blocks 1, 2
    value = run(term, teacher, student)
    assert value.item() == pytest.approx(hand_value(term, teacher, student, mask_padding), rel=1e-5)


def test_padding_counts_as_in_the_authors_code():
    term, teacher, student = bound(mask_padding=False)
    full = run(term, teacher, student)
    term.mask_padding = True
    assert not torch.isclose(full, run(term, teacher, student))


def test_gradients_reach_student_and_its_filters_only():
    term, teacher, student = bound(nonlinear=True)
    run(term, teacher, student).backward()
    assert all(p.grad is not None for p in term.student_bank.filters.parameters())
    assert all(p.grad is None for p in term.teacher_bank.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    # the stage I pooler and heads take no part in stage II
    assert all(p.grad is None for p in term.student_bank.heads.parameters())


def test_stage_two_before_stage_one_is_an_error():
    term, teacher, student = bound()
    term.trained = False
    with pytest.raises(RuntimeError, match="stage I"):
        run(term, teacher, student)


class TinyDataset(torch.utils.data.Dataset):
    def __init__(self, n=8):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(3, 40, (n, 6), generator=g)
        self.labels = (self.ids[:, 1] > 20).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(6, dtype=torch.long),
                "labels": self.labels[i], "index": torch.tensor(i)}

    def collate(self, rows):
        return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def test_probe_loss_is_the_mean_over_filters():
    teacher = bert(4).float()
    term = FEATURE_TERMS.build("ted", teacher_interval=2)
    term.bind(teacher, bert(2).float(), STACKS)
    term.teacher_bank.requires_grad_(True)  # as stage I sets it
    probe = FilterProbe(teacher, term.teacher_bank).eval()
    batch = TinyDataset().collate([TinyDataset()[i] for i in range(4)])
    family = ProbeFamily(get_family("encoder"))
    out = family.forward(probe, batch)
    assert out.logits.shape == (4, 2, 2)  # [B, filters, classes]
    expected = sum(torch.nn.functional.cross_entropy(out.logits[:, k], batch["labels"]) for k in range(2)) / 2
    loss = family.supervised_loss(out, batch)
    torch.testing.assert_close(loss, expected)
    loss.backward()  # the filters, poolers and heads learn; the model under them does not
    assert all(p.grad is not None for p in term.teacher_bank.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def context(tmp_path, calls):
    ds = TinyDataset()

    def fit(model, family, loop, phase):
        calls.append(phase)
        settings = LoopSettings(epochs=1, max_steps=3, batch_size=4, lr=loop.lr, progress=False)
        train(model, ds, family, fine_tune_objective(), settings, NullTracker(), phase, torch.device("cpu"))

    return StageContext(family=get_family("encoder"), train_ds=ds, task="glue/sst2", cache_dir=str(tmp_path),
                        loop=LoopConfig(),
                        training={"weight_decay": 0.0, "max_grad_norm": 1.0, "precision": "fp32", "world_size": 1},
                        fit=fit, is_main=lambda: True, barrier=lambda: None)


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_stage_one_trains_filters_on_frozen_models_and_caches_them(tmp_path):
    teacher, student = bert(4).float().eval(), bert(2, seed=1).float()
    term = FEATURE_TERMS.build("ted", teacher_interval=2, stage1={"max_steps": 3, "finetune_student": True})
    term.bind(teacher, student, STACKS)
    t0, s0, bank0 = snapshot(teacher), snapshot(student), snapshot(term.teacher_bank)
    calls = []
    stage_one(term, teacher, student, context(tmp_path, calls))
    assert calls == ["ted_teacher_filters", "ted_student_finetune", "ted_student_filters"]
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in t0.items())  # teacher frozen
    assert not teacher.training and all(p.requires_grad for p in teacher.parameters())  # restored
    assert any(not torch.equal(v, term.teacher_bank.state_dict()[k]) for k, v in bank0.items())
    assert not any(p.requires_grad for p in term.teacher_bank.parameters())
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in s0.items())  # fine-tuned
    assert term.trained and len(list((tmp_path / "ted_filters").glob("*.pt"))) == 2

    # a second run with the same models and recipe loads both stages from the cache
    teacher2, student2 = bert(4).float().eval(), bert(2, seed=1).float()
    term2 = FEATURE_TERMS.build("ted", teacher_interval=2, stage1={"max_steps": 3, "finetune_student": True})
    term2.bind(teacher2, student2, STACKS)
    calls2 = []
    stage_one(term2, teacher2, student2, context(tmp_path, calls2))
    assert calls2 == []
    for a, b in ((term.teacher_bank, term2.teacher_bank), (term.student_bank, term2.student_bank), (student, student2)):
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_stage_one_without_student_finetuning_keeps_the_student(tmp_path):
    teacher, student = bert(4).float().eval(), bert(2, seed=1).float()
    term = FEATURE_TERMS.build("ted", teacher_interval=2, stage1={"max_steps": 2, "finetune_student": False})
    term.bind(teacher, student, STACKS)
    s0, calls = snapshot(student), []
    stage_one(term, teacher, student, context(tmp_path, calls))
    assert calls == ["ted_teacher_filters", "ted_student_filters"]
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in s0.items())


@pytest.mark.parametrize("params, message", [
    ({"stage1": {"epoch": 3}}, "unknown key.*epoch.*valid keys"),
    ({"stage1": {"teacher_lr": 0}}, "stage1.teacher_lr=0"),
    ({"stage1": {"finetune_student": "no"}}, "stage1: finetune_student='no' must be of type bool"),
    ({"stage1": 5}, r"stage1=5 must be of type Optional\[Dict"),
    ({"mask_padding": "maybe"}, "mask_padding='maybe' must be of type bool"),
])
def test_bad_stage_one_recipe(params, message):
    with pytest.raises(ConfigError, match=message):
        FEATURE_TERMS.build("ted", **params)


def test_ted_needs_the_encoder_family():
    with pytest.raises(ConfigError, match="ted.*teacher.family=encoder"):
        build_objective(compose_config(["experiment=methods/cpu/ted", "teacher=tiny_gpt2",
                                        "student=shrunk_gpt2", "dataset=superglue/copa"]))


def test_published_ted_settings():
    cfg = compose_config(["experiment=methods/ted"])
    ted = cfg.objective.terms.ted
    assert (cfg.objective.ce_weight, cfg.divergence.weight, ted.weight) == (1.0, 20.0, 20.0)
    assert (cfg.divergence.params.temperature, cfg.divergence.params.reduction) == (2.0, "batchmean")
    assert (ted.params.teacher_interval, ted.params.student_interval, ted.params.mask_padding) == (1, 1, False)
    assert (ted.params.stage1.teacher_lr, ted.params.stage1.student_lr, ted.params.stage1.epochs) == (2e-5, 4e-5, 6)
    assert (cfg.trainer.lr, cfg.trainer.epochs, cfg.trainer.select) == (4e-5, 6, "best")
