"""Trainer benchmark: step time and its breakdown for fine-tuning, KD and SinKD, and the
speed-up of the teacher-output cache over a multi-epoch run.

    python scripts/bench_trainer.py [--samples 256] [--batch-size 32] [--max-length 64] [--steps 12]

Teacher: MiniLM-L6 (its fresh head is fine for timing); student: its layers 0 and 5.
Data: the first SST-2 training sentences from $KDLAB_DATA_DIR. Prints measured medians.
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

from kdlab import divergences, teacher_outputs
from kdlab.batching import loader
from kdlab.config import LoggerConfig, StudentConfig, TeacherConfig
from kdlab.data import get_task, load_split
from kdlab.families import get_family
from kdlab.models import STUDENTS, TEACHERS
from kdlab.objective import Objective, Term
from kdlab.tracking import Tracker
from kdlab.trainer import LoopSettings, train

FAMILY = get_family("encoder")


def objectives() -> dict[str, Objective]:
    kd = lambda: Term("kd", 0.9, divergences.get("kd", temperature=2.0))  # noqa: E731
    sink = Term("sinkhorn", 0.8, divergences.get("sinkhorn", mode="faithful"))
    return {
        "fine-tune (CE)": Objective(1.0, []),
        "KD": Objective(0.1, [kd()]),
        "SinKD (faithful)": Objective(0.1, [kd(), sink]),
        "SinKD (sound)": Objective(0.1, [kd(), Term("sinkhorn", 0.8, divergences.get("sinkhorn", mode="sound"))]),
    }


def breakdown(student, teacher, batches, objective, steps):
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
                t_out = FAMILY.forward(teacher, batch)
        t2 = time.perf_counter()
        out = FAMILY.forward(student, batch)
        ce = FAMILY.supervised_loss(out, batch)
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
    torch.manual_seed(0)
    task = get_task("glue/sst2")
    teacher = TEACHERS.get("minilm")(TeacherConfig(name="minilm"), 2, args.cache_dir, FAMILY)
    student = STUDENTS.get("from_teacher")(StudentConfig(name="from_teacher", layers=[0, 5]), teacher, 2, FAMILY)
    teacher.model.eval()
    examples = load_split("glue/sst2", "train", data_dir=os.environ.get("KDLAB_DATA_DIR"), max_samples=args.samples)

    class Cfg:
        max_length, truncation = args.max_length, "longest_first"

    ds = FAMILY.dataset(teacher.tokenizer, examples, task, Cfg)
    batches = loader(ds, args.batch_size, shuffle=True)  # collated live: "data" is real
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(ds)} SST-2 sentences, "
          f"batch {args.batch_size}, max length {args.max_length}; median of {args.steps} steps\n")

    rows = {name: breakdown(student.model, teacher.model, batches, obj, args.steps)
            for name, obj in objectives().items()}
    base = rows["fine-tune (CE)"]["step"]
    cols = list(next(iter(rows.values())))
    print("| objective | " + " | ".join(f"{c} (ms)" for c in cols) + " | steps/s | loss / step | step vs CE |")
    print("|---" * (len(cols) + 4) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{1000 * r[c]:.1f}" for c in cols)
              + f" | {1 / r['step']:.2f} | {100 * r['loss'] / r['step']:.2f}% | {r['step'] / base:.2f}x |")

    # Teacher-output cache over a multi-epoch KD run: live teacher vs cached logits
    # (the cached timing includes computing and writing the cache once).
    settings = LoopSettings(epochs=args.epochs, max_steps=-1, batch_size=args.batch_size, lr=1e-5, progress=False,
                            log_every=10**9)
    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(LoggerConfig(backend="none", mode="disabled"), tmp, {})
        for mode in ("live", "cached"):
            model = STUDENTS.get("from_teacher")(StudentConfig(name="from_teacher", layers=[0, 5]), teacher, 2,
                                                 FAMILY).model
            t0 = time.perf_counter()
            if mode == "live":
                outputs = teacher_outputs.LiveTeacher(teacher.model, FAMILY, torch.device("cpu"), "fp32")
            else:
                path = Path(tmp) / "teacher.npy"
                outputs = teacher_outputs.CachedTeacher(teacher_outputs.cached(path, lambda: teacher_outputs.compute(
                    teacher.model, ds, FAMILY, torch.device("cpu"), "fp32", 64)))
            train(model, ds, FAMILY, objectives()["SinKD (faithful)"], settings, tracker, mode, torch.device("cpu"),
                  teacher_outputs=outputs)
            timings[mode] = time.perf_counter() - t0
        tracker.finish()
    print(f"\nSinKD, {args.epochs} epochs over {len(ds)} sentences: live teacher {timings['live']:.1f} s, "
          f"cached teacher outputs {timings['cached']:.1f} s (including computing the cache): "
          f"{timings['live'] / timings['cached']:.2f}x")


if __name__ == "__main__":
    main()
