"""Several teachers (``teachers``, ``objective.teachers.combine``): the mixture's and the
sum's math, and the config refusals (kdlab.ensemble)."""

from __future__ import annotations

import math

import pytest
import torch

from kdlab import ensemble
from kdlab.config_keys import composition_key_error
from kdlab.errors import ConfigError
from kdlab.families.base import Outputs
from kdlab.objective import build_objective
from kdlab.validation import validate
from tests.conftest import compose_config

TWO = ["+teacher@teachers.a=minilm", "+teacher@teachers.b=minilm", "teachers.b.finetune.seed=1"]
KD = ["divergence=none", "objective.alpha=0.6", "objective.kd.temperature=2.0"]


def logits(seed: int, n: int = 8, c: int = 3) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed)) * 2


def loss(objective, z_s: torch.Tensor, teacher: Outputs, ce: float = 0.7):
    return objective(Outputs(z_s), torch.tensor(ce), teacher, labels=torch.zeros(len(z_s), dtype=torch.long))


def test_mixture_of_two_identical_teachers_gives_the_single_teachers_loss():
    cfg = compose_config([*KD, "divergence=js", *TWO])
    objective = build_objective(cfg)
    z_s, z_t = logits(0), logits(1)
    single, single_parts = loss(objective, z_s, Outputs(z_t))
    mixed = ensemble.mixture_logits([z_t, z_t], [0.5, 0.5])
    both, both_parts = loss(ensemble.build_objective(cfg, objective), z_s, Outputs(mixed))
    assert both.item() == pytest.approx(single.item(), rel=1e-6)
    assert both_parts.keys() == single_parts.keys() == {"ce", "kd", "js", "loss"}
    # as the run builds it: the cached tables of two identical teachers
    table = ensemble.combined(cfg, [z_t.numpy(), z_t.numpy()])
    assert torch.allclose(table({"index": torch.arange(8)}).logits, mixed)


def test_mixture_matches_a_hand_computation():
    z1 = torch.tensor([[0.0, math.log(3.0)]])  # softmax [1/4, 3/4]
    z2 = torch.tensor([[2.0, 2.0]])  # softmax [1/2, 1/2]
    mixed = ensemble.mixture_logits([z1, z2], [0.25, 0.75])
    p = [0.25 * 0.25 + 0.75 * 0.5, 0.25 * 0.75 + 0.75 * 0.5]  # [0.4375, 0.5625]
    assert mixed.exp().tolist()[0] == pytest.approx(p, rel=1e-6)
    # KD at T = 2 reads the mixture's log-probabilities scaled: target p^(1/2) / Z
    cfg = compose_config(["divergence=none", "objective.alpha=1.0", "objective.kd.temperature=2.0"])
    z_s = torch.tensor([[0.3, -0.2]])
    value, _ = loss(build_objective(cfg), z_s, Outputs(mixed))
    target = [math.sqrt(v) for v in p]
    target = [v / sum(target) for v in target]
    log_q = torch.log_softmax(z_s / 2.0, -1)[0].tolist()
    assert value.item() == pytest.approx(-sum(t * q for t, q in zip(target, log_q, strict=True)), rel=1e-6)


def test_a_zero_weight_drops_its_teacher_from_the_mixture():
    z1, z2 = logits(1), logits(2)
    assert torch.allclose(ensemble.mixture_logits([z1, z2], [1.0, 0.0]), torch.log_softmax(z1, -1), atol=1e-6)


def test_sum_equals_the_weighted_sum_of_single_teacher_objectives():
    cfg = compose_config([*KD, "divergence=js", *TWO, "teachers.a.weight=1", "teachers.b.weight=3",
                          "objective.teachers.combine=sum"])
    assert [m.weight for m in ensemble.members(cfg)] == [0.25, 0.75]  # normalised
    single = build_objective(cfg)
    summed = ensemble.build_objective(cfg, build_objective(cfg))
    assert isinstance(summed, ensemble.SumObjective)
    z_s, z1, z2 = logits(0), logits(1), logits(2)
    tables = ensemble.combined(cfg, [z1.numpy(), z2.numpy()])
    teacher = tables({"index": torch.arange(8)})
    total, parts = loss(summed, z_s, teacher)
    l1, p1 = loss(single, z_s, Outputs(z1))
    l2, p2 = loss(single, z_s, Outputs(z2))
    assert total.item() == pytest.approx(0.25 * l1.item() + 0.75 * l2.item(), rel=1e-6)
    assert parts["ce"].item() == pytest.approx(0.7)  # counted once
    for k in ("kd", "js"):
        assert parts[k].item() == pytest.approx(0.25 * p1[k].item() + 0.75 * p2[k].item(), rel=1e-6)
    assert parts["loss"].item() == pytest.approx(total.item())
    assert torch.allclose(teacher.logits, ensemble.mixture_logits([z1, z2], [0.25, 0.75]))  # agreement reads it


def test_no_teachers_is_the_single_teacher_objective():
    cfg = compose_config(KD)
    assert not ensemble.enabled(cfg)
    objective = build_objective(cfg)
    assert ensemble.build_objective(cfg, objective) is objective
    ensemble.check(cfg)


@pytest.mark.parametrize("overrides, message", [
    (["teachers.a.finetune.seed=3"],
     r"^teacher.finetune.seed=0 but teachers.a.finetune.seed=3: with teachers set, the first entry \(a\)"),
    (["teacher.finetune.lr=1e-3"], r"^teacher.finetune.lr=0.001 but teachers.a.finetune.lr=5e-05"),
    (["teachers.b.weight=-1"], r"^teachers.b.weight=-1.0: must be a finite number >= 0"),
    (["teachers.a.weight=0", "teachers.b.weight=0"], r"^teachers: every weight is 0 \(a, b\)"),
    (["trainer.cache_teacher_outputs=false"], r"^trainer.cache_teacher_outputs=false with several teachers"),
    (["online.method=dml"], r"^online.method=dml trains one teacher"),
    (["teachers.b.finetune.eval_strategy=epoch"], r"^teachers.b.finetune.eval_strategy=epoch: the teacher's"),
    (["teachers.b.finetune.lr=0"], r"^teachers.b.finetune.lr=0.0: must be > 0"),
    (["teachers.b.name=nope"], r"nope"),
])
def test_config_refusals(overrides, message):
    cfg = compose_config([*TWO, *overrides])
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


@pytest.mark.parametrize("overrides, message", [
    (["divergence=mse"], r"^objective.teachers.combine=mixture feeds log-probabilities .* mse compare"),
    (["dataset=glue/stsb", "divergence=mse", "objective.alpha=0"],
     r"^objective.teachers.combine=mixture: dataset=glue/stsb is a regression task"),
    (["+objective.terms={hid: {name: hidden, params: {layers: [[5, 1]]}}}"],
     r"^several teachers: the objective has terms bound to one teacher's model \(hidden_states\)"),
    (["+objective.terms={ted: {name: ted}}"],  # a declared pre-stage trains on one teacher's model
     r"^several teachers: the objective has terms bound to one teacher's model \(hidden_states, ted_stage_one\)"),
])
def test_objective_refusals(overrides, message):
    cfg = compose_config([*TWO, *overrides])
    with pytest.raises(ConfigError, match=message):
        ensemble.build_objective(cfg, build_objective(cfg))


def test_sum_takes_raw_logit_terms():
    cfg = compose_config([*TWO, "divergence=mse", "objective.teachers.combine=sum"])
    assert isinstance(ensemble.build_objective(cfg, build_objective(cfg)), ensemble.SumObjective)


def test_a_misspelt_combine_is_refused_at_composition():
    with pytest.raises(Exception) as info:
        compose_config([*TWO, "objective.teachers.combine=mixtrue"])
    error = composition_key_error(info.value)
    assert error is not None and str(error) == "objective.teachers.combine='mixtrue': valid values are mixture, sum"


def test_the_ensemble_preset_is_the_study_kd_row_with_two_teachers():
    """experiment=ensemble/sst2_cpu: the CPU study's KD row on SST-2 but for its teachers;
    teacher a is the study's teacher (the same node: the same cache key), b differs in its
    fine-tuning seed only."""
    from omegaconf import OmegaConf

    from kdlab.metadata import flatten

    cfg = compose_config(["experiment=ensemble/sst2_cpu", "logger=none"])
    validate(cfg)
    study = compose_config(["experiment=sinkd/glue_cpu", "experiment/sinkd/method=kd", "logger=none"])
    mine, theirs = (flatten(OmegaConf.to_container(c, resolve=False)) for c in (cfg, study))
    differ = {k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)}
    assert {k for k in differ if not k.startswith("teachers.")} == {"experiment_name", "logger.group"}
    a, b = (OmegaConf.to_container(cfg.teachers[k], resolve=True) for k in "ab")
    assert {k: v for k, v in a.items() if k != "weight"} == OmegaConf.to_container(study.teacher, resolve=True)
    assert {k for k in flatten(a) if flatten(a)[k] != flatten(b)[k]} == {"finetune.seed"}
    assert [m.weight for m in ensemble.members(cfg)] == [0.5, 0.5] and cfg.objective.teachers.combine == "mixture"
