"""Methods benchmark: seconds per optimiser step of each method's CPU preset, relative to
plain KD in the same family (the "relative cost" column of docs/methods.md), and the cost
of TED's stage I.

    python scripts/bench_methods.py [--steps 10] [--methods ted,pkd,...]

Each preset (``experiment=methods/cpu/<method>``) is composed as a run would compose it;
its teacher is built without fine-tuning (weights do not change the timing), its student
and objective as the runner builds them, and ``kdlab.trainer.train`` runs ``--steps``
steps after two warm-up steps, with a live teacher. Data: SST-2 / COPA from
$KDLAB_DATA_DIR. Prints measured medians of three repeats.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from hydra import compose, initialize_config_dir

from kdlab.cli import CONFIG_DIR
from kdlab.data import get_task, load_split
from kdlab.families import get_family
from kdlab.methods import ted
from kdlab.models import STUDENTS, TEACHERS
from kdlab.objective import build_objective, fine_tune_objective
from kdlab.teacher_outputs import LiveTeacher
from kdlab.tracking import NullTracker
from kdlab.trainer import LoopSettings, train

PRESETS = Path(CONFIG_DIR) / "experiment" / "methods" / "cpu"
CPU = torch.device("cpu")


def compose_preset(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


class Setup:
    """Teacher, student, data and objective of one composed config (no fine-tuning)."""

    def __init__(self, cfg, cache_dir: str) -> None:
        self.cfg, self.family = cfg, get_family(cfg.teacher.family)
        task = get_task(cfg.dataset.name)
        self.teacher = TEACHERS.get(cfg.teacher.name)(cfg.teacher, task.num_labels, cache_dir, self.family)
        torch.manual_seed(0)
        self.student = STUDENTS.get(cfg.student.name)(cfg.student, self.teacher, task.num_labels, self.family)
        examples = load_split(task.name, "train", data_dir=cfg.dataset.data_dir, max_samples=256, seed=0)
        t_ds = self.family.dataset(self.teacher.tokenizer, examples, task, cfg.dataset)
        if self.student.tokenizer is self.teacher.tokenizer:
            self.ds = t_ds
        else:
            from kdlab.batching import PairedDataset

            self.ds = PairedDataset(self.family.dataset(self.student.tokenizer, examples, task, cfg.dataset), t_ds)
        self.teacher_ds = t_ds

    def settings(self, steps: int, lr: float | None = None) -> LoopSettings:
        t = self.cfg.trainer
        return LoopSettings(epochs=100, max_steps=steps, batch_size=t.batch_size, lr=lr or t.lr, progress=False)

    def seconds_per_step(self, objective, steps: int, repeats: int = 3) -> float:
        objective.bind(self.teacher.model, self.student.model, self.family.stacks)
        family = self.family.with_features(objective.features)
        for term in ted.stage_one_terms(objective):
            term.trained = True  # stage II alone (stage I is timed by stage_one_seconds)
        live = LiveTeacher(self.teacher.model, family, CPU, "fp32") if objective.needs_teacher else None
        run = lambda n: train(self.student.model, self.ds, family, objective, self.settings(n),  # noqa: E731
                              NullTracker(), "bench", CPU, teacher_outputs=live)
        run(2)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(steps)
            times.append((time.perf_counter() - t0) / steps)
        return statistics.median(times)

    def stage_one_seconds(self, steps: int) -> float:
        objective = build_objective(self.cfg)
        objective.bind(self.teacher.model, self.student.model, self.family.stacks)
        (term,) = ted.stage_one_terms(objective)
        term.recipe.max_steps = steps

        def fit(model, family, lr, phase):
            train(model, self.teacher_ds, family, fine_tune_objective(), self.settings(steps, lr), NullTracker(),
                  phase, CPU)

        with tempfile.TemporaryDirectory() as cache:
            ctx = ted.StageContext(family=self.family, train_ds=self.teacher_ds, task=self.cfg.dataset.name,
                                   cache_dir=cache, training={}, fit=fit, is_main=lambda: True,
                                   barrier=lambda: None)  # a fresh cache: the key is never looked up again
            t0 = time.perf_counter()
            ted.stage_one(term, self.teacher.model, self.student.model, ctx)
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
    cache = str(Path.home() / ".cache" / "kdlab")
    rows = []
    for method in args.methods.split(","):
        preset = f"experiment=methods/cpu/{method}"
        cfg = compose_preset([preset])
        setup = Setup(cfg, cache)
        s = setup.seconds_per_step(build_objective(cfg), args.steps)
        # the same teacher, student and data with KD alone (alpha 0.5) and with CE alone
        kd_cfg = compose_preset(kd_cfg_overrides(preset))
        note = ""
        if setup.student.tokenizer is not setup.teacher.tokenizer:  # KD needs one vocabulary
            kd_cfg = compose_preset([*kd_cfg_overrides(preset), "student.tokenizer=teacher"])
            kd_setup, note = Setup(kd_cfg, cache), "KD and CE with a student of the teacher's tokenizer"
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
