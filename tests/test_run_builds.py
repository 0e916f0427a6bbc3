"""A run assembles its objective once: checked before any model is loaded, bound to the
pair before the teacher's fine-tuning, and the very object the distilled student trains
with; each other training phase (teacher fine-tuning, baseline student) gets its own
labels-only objective."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlab import assembly, runner
from kdlab import objective as objective_module
from kdlab.errors import ConfigError
from tests.conftest import compose_config


def test_one_objective_per_training_phase(tmp_path, data_dir, cache_dir, monkeypatch):
    built, trained = [], []

    def build(cfg):
        built.append(objective_module.build_objective(cfg))
        return built[-1]

    def train(model, dataset, family, objective, *args, **kwargs):
        trained.append((args[2], objective))  # (phase, objective)
        return real_train(model, dataset, family, objective, *args, **kwargs)

    real_train = assembly.train
    monkeypatch.setattr(runner, "build_objective", build)
    monkeypatch.setattr(assembly, "build_objective", build)
    monkeypatch.setattr(assembly, "train", train)
    cfg = compose_config([
        "experiment=smoke", f"output_dir={tmp_path}", f"cache_dir={cache_dir}", f"dataset.data_dir={data_dir}",
        "logger=none", "trainer.baseline_student=true", "trainer.save_student=false", "trainer.max_steps=1",
        "teacher.finetune.max_steps=1", "teacher.finetune.max_train_samples=16", "dataset.max_train_samples=16",
        "dataset.max_eval_samples=16", "teacher.force_finetune=true"])
    results = runner.run(cfg)
    assert len(built) == 1
    phases = [phase for phase, _ in trained]
    assert phases[-2:] == ["student_baseline", "student"]
    objectives = dict(trained)
    assert objectives["student"] is built[0]
    assert objectives["student_baseline"] is not built[0] and not objectives["student_baseline"].terms
    assert results["student"]["dev"] and results["baseline_student"]["dev"]


@pytest.mark.parametrize("override", ["objective.alpha=1.5", "divergence.params.epsilon=-1"])
def test_a_bad_objective_fails_before_any_model(tmp_path, override, monkeypatch):
    monkeypatch.setattr(assembly.Experiment, "load_teacher", lambda *a, **k: pytest.fail("a model was loaded"))
    cfg = compose_config(["experiment=smoke", f"output_dir={tmp_path}", "logger=none", override])
    with pytest.raises(ConfigError):
        runner.run(cfg)


def test_the_runner_is_a_short_list_of_phases():
    """The run's structure reads top to bottom in one short module; the work lives in
    kdlab.assembly (what is built) and the modules each phase calls."""
    source = Path(runner.__file__).read_text()
    assert len(source.splitlines()) < 150
    order = [source.index(f"{name}(") for name in ("validate", "build_objective", "assemble", "reference_rows",
                                                    "baseline_phase", "distillation_phase", "summary_phase")]
    assert order == sorted(order)


def test_families_are_not_mutated_by_a_phase(tmp_path):
    """Distillation with feature terms runs a copy of the family that returns hidden
    states; the run's family (teacher fine-tuning, baseline, evaluation) stays plain."""
    import torch

    from kdlab.families import get_family
    from kdlab.tracking import NullTracker

    cfg = compose_config(["experiment=methods/distilbert", f"output_dir={tmp_path}", "logger=none"])
    exp = assembly.Experiment(cfg, NullTracker(), torch.device("cpu"))
    assert exp.distill_family.features == {"hidden_states"} and exp.family.features == frozenset()
    assert type(exp.distill_family) is type(exp.family)
    causal = get_family("causal")
    copy = causal.with_features(frozenset({"attentions"}))
    assert causal.features == frozenset() and vars(copy) == {**vars(causal), "features": copy.features}
    assert causal.with_features(frozenset()) is causal
