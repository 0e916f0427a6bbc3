"""Trainer benchmark: step time and its breakdown for fine-tuning, KD and SinKD, and the
speed-up of the teacher-output cache over a multi-epoch run.

    python scripts/bench_trainer.py [--samples 256] [--batch-size 32] [--max-length 64] [--steps 12]

Teacher, student, data and objectives are what a run builds from the config composed by
``compose_run`` (``kdlab.assembly.Experiment``): teacher ``teacher=minilm`` (its fresh
head is fine for timing: not fine-tuned), student ``student=minilm_l2`` (its layers 0 and
5), SST-2 training sentences from $KDLAB_DATA_DIR encoded by the family, and one objective
per row: CE alone (``objective.alpha=0 divergence=none``), KD (``divergence=none``), SinKD
(``divergence=sinkhorn``, faithful, and ``divergence=sinkhorn_sound``). Prints measured medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from hydra import compose, initialize_config_dir

from kdlab import teacher_outputs
from kdlab.assembly import Experiment, loop_config
from kdlab.batching import loader
from kdlab.cli import CONFIG_DIR
from kdlab.config import LoggerConfig
from kdlab.objective import Objective
from kdlab.tracking import NullTracker, Tracker
from kdlab.trainer import train
from kdlab.validation import validate

CPU = torch.device("cpu")
# one row per objective: the overrides that make it
OBJECTIVES = {
    "fine-tune (CE)": ["objective.alpha=0", "divergence=none"],
    "KD": ["divergence=none"],
    "SinKD (faithful)": ["divergence=sinkhorn"],
    "SinKD (sound)": ["divergence=sinkhorn_sound"],
}


def compose_run(args: argparse.Namespace, objective: list[str]):
    """The benchmarked run's config, as ``kdlab <overrides>`` composes it."""
    overrides = ["teacher=minilm", "student=minilm_l2", "dataset=glue/sst2", f"dataset.max_length={args.max_length}",
                 f"dataset.max_train_samples={args.samples}", f"trainer.batch_size={args.batch_size}",
                 "trainer.lr=1e-5", f"trainer.epochs={args.epochs}", "trainer.max_steps=-1",
                 "trainer.progress=false", f"trainer.log_every={10**9}", "hardware=cpu", "logger=none",
                 f"cache_dir={args.cache_dir}", *objective]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    validate(cfg)
    return cfg


def objectives(args: argparse.Namespace) -> dict[str, Objective]:
    """Each row's objective, as its run builds it (bound to no model: logit terms only)."""
    return {name: Experiment(compose_run(args, o), NullTracker(), CPU).objective for name, o in OBJECTIVES.items()}


def breakdown(family, student, teacher, batches, objective, steps):
    """Median seconds per phase of one optimiser step (CPU: calls are synchronous)."""
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5, fused=True)
    times = {k: [] for k in ("data", "teacher forward", "student fwd+bwd", "loss", "optimizer", "step")}
    it = iter(batches)
    for i in range(steps + 2):  # two warm-up steps
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(batches)
            batch = next(it)
        t1 = time.perf_counter()
        t_out = None
        if objective.needs_teacher:
            with torch.no_grad():
                t_out = family.forward(teacher, batch)
        t2 = time.perf_counter()
        out = family.forward(student, batch)
        ce = family.supervised_loss(out, batch)
        t3 = time.perf_counter()
        loss, _ = objective(out, ce, t_out, labels=batch["labels"])
        t4 = time.perf_counter()
        loss.backward()
        t5 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t6 = time.perf_counter()
        if i >= 2:
            for k, v in zip(times, (t1 - t0, t2 - t1, (t3 - t2) + (t5 - t4), t4 - t3, t6 - t5, t6 - t0), strict=True):
                times[k].append(v)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--cache-dir", default=os.environ.get("KDLAB_CACHE_DIR", str(Path.home() / ".cache/kdlab")))
    args = p.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    exp = Experiment(compose_run(args, OBJECTIVES["SinKD (faithful)"]), NullTracker(), CPU)
    teacher = exp.load_teacher()
    student = exp.build_student(teacher)
    teacher.model.eval()
    examples = exp.examples("train", args.samples, exp.cfg.seed)
    ds = exp.encode(teacher.tokenizer, examples)
    batches = loader(ds, args.batch_size, shuffle=True)  # collated live: "data" is real
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(ds)} SST-2 sentences, "
          f"batch {args.batch_size}, max length {args.max_length}; median of {args.steps} steps\n")

    rows = {name: breakdown(exp.family, student.model, teacher.model, batches, obj, args.steps)
            for name, obj in objectives(args).items()}
    base = rows["fine-tune (CE)"]["step"]
    cols = list(next(iter(rows.values())))
    print("| objective | " + " | ".join(f"{c} (ms)" for c in cols) + " | steps/s | loss / step | step vs CE |")
    print("|---" * (len(cols) + 4) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{1000 * r[c]:.1f}" for c in cols)
              + f" | {1 / r['step']:.2f} | {100 * r['loss'] / r['step']:.2f}% | {r['step'] / base:.2f}x |")

    # Teacher-output cache over a multi-epoch KD run: live teacher vs cached logits
    # (the cached timing includes computing and writing the cache once).
    settings = loop_config(exp.cfg.trainer)
    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(LoggerConfig(backend="none", mode="disabled"), tmp, {})
        for mode in ("live", "cached"):
            model = exp.build_student(teacher).model
            t0 = time.perf_counter()
            if mode == "live":
                outputs = teacher_outputs.LiveTeacher(teacher.model, exp.family, CPU, "fp32")
            else:
                path = Path(tmp) / "teacher.npy"
                outputs = teacher_outputs.CachedTeacher(teacher_outputs.cached(path, lambda: teacher_outputs.compute(
                    teacher.model, ds, exp.family, CPU, "fp32", 64)))
            train(model, ds, exp.family, exp.objective, settings, tracker, mode, CPU, teacher_outputs=outputs)
            timings[mode] = time.perf_counter() - t0
        tracker.finish()
    print(f"\nSinKD, {args.epochs} epochs over {len(ds)} sentences: live teacher {timings['live']:.1f} s, "
          f"cached teacher outputs {timings['cached']:.1f} s (including computing the cache): "
          f"{timings['live'] / timings['cached']:.2f}x")


if __name__ == "__main__":
    main()
