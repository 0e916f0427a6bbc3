"""Methods benchmark: seconds per optimiser step of each method's CPU preset, relative to
plain KD in the same family (the "relative cost" column of docs/methods.md), and the cost
of TED's stage I.

    python scripts/bench_methods.py [--steps 10] [--methods ted,pkd,...] [--threads 2]

Each preset (``experiment=methods/cpu/<method>``) is composed and assembled as a run does
it (``kdlab.assembly.assemble``: its data, its teacher fine-tuned once and cached in
kdlab's cache, ``$KDLAB_CACHE_DIR`` or ~/.cache/kdlab, shared by every preset of the same
sizes and by their runs, its datasets), its student and objective are the run's
(``Experiment.build_student``, the run's one objective), and ``kdlab.trainer.train`` runs
``--steps`` steps of the run's loop settings after two warm-up steps, with a live teacher.
Data: SST-2 / COPA from $KDLAB_DATA_DIR. Prints measured medians of three repeats.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import transformers
from hydra import compose, initialize_config_dir

from kdlab.assembly import Experiment, assemble, loop_config
from kdlab.cli import CONFIG_DIR
from kdlab.methods import ted
from kdlab.objective import build_objective, fine_tune_objective
from kdlab.teacher_outputs import LiveTeacher
from kdlab.tracking import NullTracker
from kdlab.trainer import LoopSettings, train
from kdlab.validation import validate

PRESETS = Path(CONFIG_DIR) / "experiment" / "methods" / "cpu"
CPU = torch.device("cpu")


def compose_preset(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    validate(cfg)
    return cfg


def stage_one_terms(objective) -> list[ted.TaskAwareFilters]:
    """The objective's weighted TED terms (the terms with a stage I)."""
    return [t.module for t in objective.weighted() if isinstance(t.module, ted.TaskAwareFilters)]


class Bench:
    """One composed config as a run assembles it (``kdlab.assembly.Setup``), and the
    student the run trains."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.exp = Experiment(cfg, NullTracker(), CPU)
        self.setup = assemble(self.exp)
        self.teacher = self.setup.teacher
        self.student = self.exp.build_student(self.teacher)

    def settings(self, steps: int) -> LoopSettings:
        """The run's loop settings (``trainer``), stopped after ``steps`` steps."""
        return replace(loop_config(self.cfg.trainer), max_steps=steps, progress=False)

    def seconds_per_step(self, objective, steps: int, repeats: int = 3) -> float:
        """``objective`` trained on the data a run trains it on: the distillation data
        (both tokenisations when they differ), or the student's own for CE alone."""
        objective.bind(self.teacher.model, self.student.model, self.exp.family.stacks)
        family = self.exp.family.with_features(objective.features)
        for term in stage_one_terms(objective):
            term.trained = True  # stage II alone (stage I is timed by stage_one_seconds)
        live = LiveTeacher(self.teacher.model, family, CPU, "fp32") if objective.needs_teacher else None
        data = self.setup.distill_ds if objective.needs_teacher else self.setup.s_train
        run = lambda n: train(self.student.model, data, family, objective, self.settings(n),  # noqa: E731
                              NullTracker(), "bench", CPU, teacher_outputs=live)
        run(2)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(steps)
            times.append((time.perf_counter() - t0) / steps)
        return statistics.median(times)

    def stage_one_seconds(self, steps: int) -> float:
        """TED's stage I as ``Experiment.pre_stages`` runs it (the run's loop settings, the
        distillation data), each of its phases stopped after ``steps`` steps, in a fresh
        stage cache (timed, never looked up)."""
        objective = build_objective(self.cfg)
        objective.bind(self.teacher.model, self.student.model, self.exp.family.stacks)
        for term in stage_one_terms(objective):
            term.recipe.max_steps = steps
        train_ds = self.setup.distill_ds

        def fit(model, family, loop, phase):
            train(model, train_ds, family, fine_tune_objective(), loop, NullTracker(), phase, CPU)

        with tempfile.TemporaryDirectory() as cache:
            ctx = ted.StageContext(family=self.exp.family, train_ds=train_ds, task=self.cfg.dataset.name,
                                   cache_dir=cache, loop=self.settings(steps), training={}, fit=fit,
                                   is_main=lambda: True, barrier=lambda: None)
            t0 = time.perf_counter()
            for stage in objective.pre_stages():
                stage.run(self.teacher.model, self.student.model, ctx)
            elapsed = time.perf_counter() - t0
        return elapsed


def kd_cfg_overrides(preset: str) -> list[str]:
    return [preset, "divergence=none", "objective.alpha=0.5", "objective.ce_weight=null", "objective.terms={}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--methods", default=",".join(sorted(p.stem for p in PRESETS.glob("*.yaml") if p.stem != "sizes")))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    rows = []
    for method in args.methods.split(","):
        preset = f"experiment=methods/cpu/{method}"
        cfg = compose_preset([preset])
        setup = Bench(cfg)
        s = setup.seconds_per_step(build_objective(cfg), args.steps)
        # the same teacher, student and data with KD alone (alpha 0.5) and with CE alone
        kd_cfg = compose_preset(kd_cfg_overrides(preset))
        note = ""
        if setup.student.tokenizer is not setup.teacher.tokenizer:  # KD needs one vocabulary
            kd_cfg = compose_preset([*kd_cfg_overrides(preset), "student.tokenizer=teacher"])
            kd_setup, note = Bench(kd_cfg), "KD and CE with a student of the teacher's tokenizer"
        else:
            kd_setup = setup
        kd = kd_setup.seconds_per_step(build_objective(kd_cfg), args.steps)
        ce = kd_setup.seconds_per_step(fine_tune_objective(), args.steps)
        if method == "ted":
            note = f"stage I: {setup.stage_one_seconds(args.steps):.1f} s for its 3 phases of {args.steps} steps"
        rows.append((method, cfg.teacher.family, s, s / kd, s / ce, note))
        print(f"{method:12s} {cfg.teacher.family:8s} {s * 1000:7.0f} ms/step  {s / kd:5.2f}x KD "
              f"({kd * 1000:.0f} ms)  {s / ce:5.2f}x CE ({ce * 1000:.0f} ms)  {note}", flush=True)
    print("\n| method | family | ms / step | vs KD | vs CE fine-tuning | note |\n|---|---|---|---|---|---|")
    for method, family, s, r_kd, r_ce, extra in rows:
        print(f"| {method} | {family} | {s * 1000:.0f} | {r_kd:.2f}x | {r_ce:.2f}x | {extra} |")


if __name__ == "__main__":
    main()
