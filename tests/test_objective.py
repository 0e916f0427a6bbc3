"""The objective's assembly: unique term names, terms that need class distributions, the
KD temperature schedules."""

from __future__ import annotations

import pytest
import torch

from kdlab import divergences, terms
from kdlab.config import LoggerConfig
from kdlab.data import get_task
from kdlab.divergences.kl import SoftTargetCE
from kdlab.errors import ConfigError
from kdlab.families import get_family
from kdlab.families.base import Outputs
from kdlab.objective import (
    Objective,
    Term,
    build_objective,
    kd_temperature,
    needs_class_distributions,
)
from kdlab.terms import TERMS, Reads
from kdlab.tracking import Tracker
from kdlab.trainer import LoopSettings, total_epochs, train
from tests.conftest import compose_config, refused_before_training
from tests.test_trainer import ToyData, tiny_model

# -- the KD temperature schedules ---------------------------------------------------------


def test_epoch_schedule_by_hand():
    """SinKD's DistillKL_anneal: T_e = T + (1 - T) * e / (E - 1), once per epoch."""
    assert [kd_temperature(4.0, "epoch", 0.0, e, 3) for e in range(3)] == [4.0, 2.5, 1.0]  # MRPC
    assert [kd_temperature(3.0, "epoch", 0.0, e, 5) for e in range(5)] == [3.0, 2.5, 2.0, 1.5, 1.0]
    assert kd_temperature(4.0, "epoch", 0.99, 0, 3) == 4.0  # within an epoch the step does not matter
    assert kd_temperature(4.0, "epoch", 1.0, 7, 3) == 1.0  # a rounded-up extra batch stays at 1
    assert kd_temperature(4.0, "epoch", 0.5, 0, 1) == 4.0  # E = 1: nothing to anneal, no 0 / 0
    assert kd_temperature(0.5, "epoch", 0.0, 1, 2) == 1.0  # from below 1 too


def test_step_and_none_schedules_by_hand():
    assert [kd_temperature(4.0, "step", f, 0, 3) for f in (0.0, 0.5, 1.0, 1.5)] == [4.0, 2.5, 1.0, 1.0]
    assert kd_temperature(4.0, "none", 1.0, 2, 3) == 4.0


@pytest.mark.parametrize("kw, batches, epochs", [
    (dict(epochs=3.0), 4, 3),
    (dict(epochs=2.5), 4, 3),  # a partial last epoch counts: it runs at T = 1
    (dict(epochs=0.5), 4, 1),
    (dict(epochs=1.0, max_steps=10), 4, 3),  # max_steps overrides epochs: 10 batches of 4 a epoch
    (dict(epochs=1.0, max_steps=4, grad_accum=2), 4, 2),
])
def test_epochs_of_a_loop(kw, batches, epochs):
    settings = LoopSettings(**{"max_steps": -1, "lr": 1e-3, "batch_size": 8, **kw})
    assert total_epochs(settings, batches) == epochs


class Recording(SoftTargetCE):
    """KD that records its temperature at every call."""

    def __init__(self, temperature, anneal):
        super().__init__(temperature=temperature, anneal=anneal)
        self.seen = []

    def forward(self, s, t, mask=None):
        self.seen.append(round(self.temperature, 6))
        return super().forward(s, t, mask)


@pytest.mark.parametrize("schedule, expected", [
    ("epoch", [4.0] * 4 + [2.5] * 4 + [1.0] * 4),  # 3 epochs of 4 batches
    ("step", [round(4.0 - 3.0 * k / 12, 6) for k in range(12)]),
    ("none", [4.0] * 12),
])
def test_the_loop_applies_the_schedule(tmp_path, schedule, expected):
    family = get_family("encoder")
    teacher_model = tiny_model(seed=1).eval()

    def teacher(batch):
        with torch.no_grad():
            return family.forward(teacher_model, batch)

    kd = Recording(4.0, schedule)  # the KD term's own schedule
    objective = Objective(0.5, [Term("kd", 0.5, kd)])
    tracker = Tracker(LoggerConfig(backend="none", mode="disabled"), tmp_path / "run", {})
    try:
        train(tiny_model(), ToyData(n=32), family, objective,
              LoopSettings(epochs=3, max_steps=-1, batch_size=8, lr=1e-3, log_every=100, progress=False),
              tracker, "test", torch.device("cpu"), teacher_outputs=teacher)
    finally:
        tracker.finish()
    assert kd.seen == expected


@pytest.mark.parametrize("value, schedule", [("epoch", "epoch"), ("step", "step"), ("none", "none"),
                                             ("false", "none")])
def test_anneal_values(value, schedule):
    objective = build_objective(compose_config(["objective.alpha=0.5", f"objective.kd.anneal={value}"]))
    assert objective.terms[0].module.anneal == schedule


@pytest.mark.parametrize("value, message", [
    ("true", "say which schedule, 'epoch' .*SinKD.* or 'step'"),
    ("linear", "objective.kd.anneal='linear': valid values are none, epoch, step"),
])
def test_anneal_bad_values(value, message):
    with pytest.raises(ConfigError, match=message):
        build_objective(compose_config([f"objective.kd.anneal={value}"]))


def test_published_presets_anneal_per_epoch():
    for task, schedule in [("mrpc", "epoch"), ("qqp", "epoch"), ("mnli", "epoch"), ("rte", "none")]:
        cfg = compose_config(["experiment=sinkd/glue", f"experiment/sinkd/glue/task={task}"])
        assert build_objective(cfg).terms[0].module.anneal == schedule


def test_only_the_alpha_term_is_annealed():
    """objective.kd.anneal schedules objective.kd.temperature: a divergence named kd (with
    objective.alpha=0) keeps its own temperature."""
    objective = build_objective(compose_config(["divergence=kd", "objective.alpha=0", "divergence.params.temperature=3",
                                                "objective.kd.anneal=step"]))
    objective.set_progress(1.0, 2, 3)
    assert objective.terms[0].module.temperature == 3.0


# -- term names ---------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    (["divergence=kd", "objective.alpha=0.5"], "divergence=kd with objective.alpha > 0 makes two terms named 'kd'"),
    (["divergence=kl", "+objective.terms={kl: {name: rkl}}"], "two terms named 'kl' \\(divergence and objective.terms.kl\\)"),
    (["divergence=none", "objective.alpha=0.5", "+objective.terms={kd: {name: kl}}"],
     "two terms named 'kd' \\(objective.alpha and objective.terms.kd\\)"),
    (["+objective.terms={loss: {name: kl}}"], "named 'loss', the name of the weighted sum"),
    (["+objective.terms={ce: {name: kl}}"], "named 'ce', the name of the cross-entropy"),
])
def test_term_names_are_unique(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_objective(compose_config(overrides))


@pytest.mark.parametrize("overrides", [
    ["divergence=kd", "objective.alpha=0.5"],
    ["divergence=kl", "objective.alpha=0.7", "+objective.terms={extra: {name: js, weight: 0.3}}"],
    ["divergence=sinkhorn"],
    ["divergence=none", "objective.alpha=0.4"],
])
def test_logged_loss_is_the_weighted_sum_of_logged_parts(overrides):
    try:
        objective = build_objective(compose_config(overrides))
    except ConfigError:
        return  # refused at config time: nothing is logged
    g = torch.Generator().manual_seed(0)
    student = Outputs(logits=torch.randn(8, 2, generator=g))
    teacher = Outputs(logits=torch.randn(8, 2, generator=g))
    loss, parts = objective(student, torch.tensor(0.7), teacher, labels=torch.randint(0, 2, (8,), generator=g))
    weights = {"ce": objective.ce_weight, **{t.name: t.weight for t in objective.terms}}
    assert set(parts) - {"loss"} == {k for k, w in weights.items() if w > 0}
    expected = sum(weights[k] * v for k, v in parts.items() if k != "loss")
    torch.testing.assert_close(parts["loss"], expected)
    torch.testing.assert_close(loss, expected)


# -- regression: terms that need class distributions --------------------------------------


def test_regression_refuses_terms_on_class_distributions():
    with pytest.raises(ConfigError, match=r"glue/stsb is a regression task .*kd \(objective.alpha\), "
                                          r"sinkhorn \(divergence\).*divergence=mse objective.alpha=0"):
        build_objective(compose_config(["dataset=glue/stsb"]))
    with pytest.raises(ConfigError, match="regression task"):
        build_objective(compose_config(["dataset=glue/stsb", "divergence=mse"]))  # KD still on


def test_regression_with_logit_mse_builds():
    objective = build_objective(compose_config(["dataset=glue/stsb", "divergence=mse", "objective.alpha=0"]))
    assert [t.name for t in objective.terms] == ["mse"] and objective.ce_weight == 1.0


def test_declarations():
    """Every registered term is a Term declaring what it reads; only logit MSE and the
    feature terms work on one output; only ULD works across tokenizers in every family."""
    classes = {name: TERMS.get(name) for name in TERMS.names()}
    assert all(issubclass(c, terms.Term) for c in classes.values())
    features = {name for name, c in classes.items() if terms.feature_fields(c.reads)}
    assert features == {"hidden", "attention", "ted", "pkd", "distilbert_cos"}
    assert {name for name, c in classes.items() if not c.needs_class_distributions} == features | {"mse"}
    assert {name for name, c in classes.items() if Reads.LABELS in c.reads} == {"dkd", "pld", "demd"}
    assert {name for name, c in classes.items() if c.cross_tokenizer} == {"uld"}
    assert needs_class_distributions(divergences.get("uld"))
    assert get_task("glue/stsb").is_regression


def test_regression_refused_before_any_model_loads(tmp_path, data_dir):
    err = refused_before_training(["dataset=glue/stsb"], tmp_path, data_dir)
    lines = [line for line in err.splitlines() if line.startswith("kdlab: error:")]
    assert len(lines) == 1 and "divergence=mse objective.alpha=0" in lines[0]
