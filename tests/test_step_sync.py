"""The student step never waits for the device between logging steps, in every family,
for every kind of term: the steps of ``kdlab.trainer.train`` before its first logging step
run under ``tests.synctools.SyncWatch``, which fails on any host synchronisation made by
kdlab's own code (``.item()``, ``bool(t)``, ``x[mask]``, ``.tolist()``, ...). The CPU
counts what a CUDA run would synchronise on (``tests/gpu`` checks the same on a GPU with
``torch.cuda.set_sync_debug_mode``)."""

from __future__ import annotations

from typing import Any, List

import pytest
import torch

from kdlab import divergences, token_cache
from kdlab.ensemble import EnsembleTeacher, SumObjective
from kdlab.features import FEATURE_TERMS
from kdlab.methods import LABEL_TERMS
from kdlab.nonfinite import NonFiniteGuard
from kdlab.objective import Objective, Term
from kdlab.teacher_outputs import LiveTeacher
from kdlab.trainer import train
from tests.families.famtools import SETUPS, make_pair
from tests.synctools import Sync, SyncWatch
from tests.test_trainer import FAMILY, ToyData, settings, tiny_model

CPU = torch.device("cpu")


@pytest.fixture(params=sorted(SETUPS))
def pair(request, cache_dir):
    return make_pair(request.param, cache_dir)


class MixedLabels(ToyData):
    """ToyData with transfer rows (``has_label`` False on every third example)."""

    def collate(self, idx):
        batch = super().collate(idx)
        return {**batch, "has_label": batch["index"] % 3 != 1}


def watched_train(monkeypatch, tracker, model, data, family, objective, teacher, steps: int = 2,
                  batch_size: int = 4, extra: Any = None) -> List[Sync]:
    """``steps`` steps of ``train`` logging only at the last; kdlab's synchronisations from
    the first step's start (``objective.set_progress``) to the first logging step (its
    non-finite check, where reading the device is the point)."""
    state = {"armed": False, "logged": False}
    set_progress, check = objective.set_progress, NonFiniteGuard.check

    def arm(*a, **k):
        state["armed"] = not state["logged"]
        return set_progress(*a, **k)

    def disarm(guard):
        state["armed"], state["logged"] = False, True
        return check(guard)

    monkeypatch.setattr(objective, "set_progress", arm)
    monkeypatch.setattr(NonFiniteGuard, "check", disarm)
    watch = SyncWatch(lambda: state["armed"])
    with watch:
        result = train(model, data, family, objective,
                       settings(max_steps=steps, batch_size=batch_size, log_every=steps, eval_strategy="end"),
                       tracker, "test", CPU, teacher_outputs=teacher)
    assert result.steps == steps and state["logged"]
    return watch.kdlab


def no_syncs(seen: List[Sync]) -> None:
    assert not seen, "host synchronisations in the step:\n" + "\n".join(f"{s.what} at {s.where}" for s in seen)


def encoder_teacher():
    return LiveTeacher(tiny_model(seed=1), FAMILY, CPU, "fp32")


def dkd() -> torch.nn.Module:
    term = LABEL_TERMS.build("dkd", temperature=2.0, warmup=1.0)
    term.set_training_epochs(1.0)
    return term


ENCODER_TERMS = {
    "kd+kl+label terms, transfer rows": lambda: [
        Term("kd", 0.5, divergences.get("kd", temperature=2.0)), Term("kl", 0.3, divergences.get("kl")),
        Term("dkd", 0.2, dkd()), Term("pld", 0.2, LABEL_TERMS.build("pld"))],
    "sinkhorn faithful": lambda: [Term("sinkhorn", 0.8, divergences.get("sinkhorn", mode="faithful"))],
    # at tol > 0 the sound mode reads its convergence flag every few iterations (see
    # tests/divergences/test_sinkhorn_sound.py); a fixed iteration count reads nothing
    "sinkhorn sound, fixed iterations": lambda: [
        Term("sinkhorn", 0.8, divergences.get("sinkhorn", mode="sound", tol=0.0, max_iter=12))],
    # every registered logit divergence (Sinkhorn above, ULD in the token families)
    "every logit divergence": lambda: [Term(n, 0.1, divergences.get(n)) for n in divergences.names()
                                       if n not in ("sinkhorn", "uld")],
}


@pytest.mark.parametrize("terms", sorted(ENCODER_TERMS))
def test_encoder_step_does_not_synchronise(monkeypatch, tracker, terms):
    objective = Objective(0.5, ENCODER_TERMS[terms]())
    no_syncs(watched_train(monkeypatch, tracker, tiny_model(), MixedLabels(), FAMILY, objective,
                         encoder_teacher()))


@pytest.mark.parametrize("combine", ["mixture", "sum"])
def test_several_teachers_do_not_synchronise(monkeypatch, tracker, combine):
    teacher = EnsembleTeacher([encoder_teacher(), LiveTeacher(tiny_model(seed=2), FAMILY, CPU, "fp32")], [0.6, 0.4])
    objective = Objective(0.5, [Term("kd", 0.5, divergences.get("kd", temperature=2.0)),
                                Term("kl", 0.5, divergences.get("kl"))])
    if combine == "sum":
        objective = SumObjective(objective, [0.6, 0.4])
    no_syncs(watched_train(monkeypatch, tracker, tiny_model(), MixedLabels(), FAMILY, objective, teacher))


def test_feature_terms_do_not_synchronise(monkeypatch, tracker):
    student, teacher_model = tiny_model(), tiny_model(seed=1)
    hidden = FEATURE_TERMS.build("hidden", layers=[[2, 1]])
    attention = FEATURE_TERMS.build("attention", layers=[[1, 0]])
    objective = Objective(0.5, [Term("hidden", 0.3, hidden), Term("attention", 0.3, attention)])
    objective.bind(teacher_model, student, FAMILY.stacks)
    family = FAMILY.with_features(objective.features)
    teacher = LiveTeacher(teacher_model, family, CPU, "fp32")
    no_syncs(watched_train(monkeypatch, tracker, student, ToyData(), family, objective, teacher))


def token_terms() -> Objective:
    return Objective(0.5, [Term("kd", 0.5, divergences.get("kd", temperature=2.0)),
                           Term("kl", 0.5, divergences.get("kl")), Term("uld", 0.5, divergences.get("uld"))])


def test_token_family_step_does_not_synchronise(monkeypatch, tracker, pair):
    teacher = LiveTeacher(pair.teacher.model, pair.family, CPU, "fp32")
    no_syncs(watched_train(monkeypatch, tracker, pair.student.model, pair.dataset, pair.family, token_terms(),
                         teacher, batch_size=2))


def test_top_k_teacher_cache_step_does_not_synchronise(monkeypatch, tracker, pair, tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    token_cache.write(root, pair.teacher.model, pair.dataset, pair.family, CPU, "fp32", batch_size=2, k=4,
                      temperature=1.0, shard_tokens=1 << 20)
    teacher = token_cache.TokenCachedTeacher(root)
    objective = Objective(0.5, [Term("kd", 0.5, divergences.get("kd")), Term("kl", 0.5, divergences.get("kl"))])
    no_syncs(watched_train(monkeypatch, tracker, pair.student.model, pair.dataset, pair.family, objective,
                         teacher, batch_size=2))


def test_the_watch_sees_a_synchronisation_in_kdlab(monkeypatch, tracker):
    """Not vacuous: a boolean index and a scalar read in a kdlab term are seen, each step."""

    class Syncing(torch.nn.Module):
        temperature = 1.0

        def forward(self, s, t, mask=None):
            return divergences.base.check_not_probabilities(s, "s") or ((s - t) ** 2).mean()

    seen = watched_train(monkeypatch, tracker, tiny_model(), ToyData(), FAMILY,
                         Objective(0.5, [Term("s", 0.5, Syncing())]), encoder_teacher())
    assert len(seen) >= 2 and all("divergences/base.py" in s.where for s in seen)
