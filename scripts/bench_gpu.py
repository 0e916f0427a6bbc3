"""kdlab's student step against a plain PyTorch loop doing the same work on the same inputs.

    python scripts/bench_gpu.py --device cuda        # MiniLM-L6-sized teacher, 2-layer student
    python scripts/bench_gpu.py --device cpu --size tiny --steps 5 --repeats 3

Both loops run one KD step per batch: the teacher's forward (no grad), the student's
forward and backward, ``0.5 * CE + 0.5 * KD(T=2)``, gradient clipping and fused AdamW,
under bf16 autocast on CUDA (fp32 on CPU). Models, objective and loop settings are what a
run builds (``kdlab.assembly.Experiment`` on a config composed as the command line would:
``compose_run``): the teacher is ``teacher=tiny_bert`` with MiniLM-L6's shape (hidden 384,
6 layers, 12 heads, intermediate 1536, vocabulary 30522) in ``teacher.overrides``, random
weights built from its config (no download, no fine-tuning: weights do not change the
timing); the student is ``student=shrunk``, the same shape with 2 layers; every run starts
from the same student weights. Inputs: random token ids, batch 32, length 64, identical
for every loop.

Throughput is timed in windows of ``--steps`` steps, each ending with a host
synchronisation (kdlab's logging step; ``torch.cuda.synchronize`` in the plain loop); the
first window (warm-up: allocator, kernel selection, compilation) is dropped and the median
of the next ``--repeats`` windows is reported. kdlab's figure is its own logged
``student/samples_per_s`` of those windows. Rows: the plain loop; kdlab's trainer with
the teacher live (the same work); with ``hardware.compile``; and, for reference, with
cached teacher outputs (kdlab's default student phase, which skips the teacher forward).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F
import transformers
from hydra import compose, initialize_config_dir

from kdlab import teacher_outputs
from kdlab.assembly import Experiment, loop_config
from kdlab.cli import CONFIG_DIR
from kdlab.config import LoggerConfig
from kdlab.precision import autocast
from kdlab.tracking import METRICS_FILE, NullTracker, Tracker
from kdlab.trainer import train
from kdlab.validation import validate

SIZES = {  # teacher.overrides of teacher=tiny_bert (BertConfig fields); the student has 2 layers
    "minilm": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                   intermediate_size=1536, max_position_embeddings=512),
    "tiny": dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, max_position_embeddings=128),
}
ALPHA, TEMPERATURE, LR = 0.5, 2.0, 1e-5


class RandomTokens(torch.utils.data.Dataset):
    """Fixed-length random token sequences and binary labels, collated like kdlab's data."""

    def __init__(self, n: int, length: int, vocab: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, vocab, (n, length), generator=g)  # [N, L]
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, idx: List[int]) -> Dict[str, torch.Tensor]:
        index = torch.tensor(idx)
        ids = self.ids[index]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[index],
                "index": index}


def compose_run(args: argparse.Namespace, device: torch.device, compile: bool):
    """The config of the benchmarked student step, as ``kdlab <overrides>`` composes it:
    ``0.5 * CE + 0.5 * KD(T=2)`` (no divergence term), no warm-up or weight decay, one
    logged window every ``--steps`` steps, dropout off in both models. The embedded MiniLM
    tokenizer is read from kdlab's cache (``$KDLAB_CACHE_DIR``, default ~/.cache/kdlab)."""
    shape = {**SIZES[args.size], "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    overrides = [
        "teacher=tiny_bert", *[f"+teacher.overrides.{k}={v}" for k, v in shape.items()],
        # shrunk's own sizes removed: the student is the teacher's shape with 2 layers
        "student=shrunk", "~student.overrides.hidden_size", "~student.overrides.num_attention_heads",
        "~student.overrides.intermediate_size", "student.overrides.num_hidden_layers=2",
        "dataset=glue/sst2", f"dataset.max_length={args.max_length}",
        "divergence=none", f"objective.alpha={ALPHA}", f"objective.kd.temperature={TEMPERATURE}",
        "objective.kd.t2=false",
        f"trainer.batch_size={args.batch_size}", f"trainer.lr={LR}", "trainer.warmup_ratio=0",
        "trainer.weight_decay=0", "trainer.max_grad_norm=1.0", f"trainer.max_steps={args.steps * (args.repeats + 1)}",
        f"trainer.log_every={args.steps}", "trainer.progress=false",
        f"hardware={device.type}", f"hardware.compile={str(compile).lower()}",
        "logger=none",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    validate(cfg)
    return cfg


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(student, teacher, data, args, device, precision) -> List[float]:
    """The reference: a loop as one writes it by hand. Returns samples/s per window."""
    student = student.to(device).train()
    opt = torch.optim.AdamW(student.parameters(), lr=LR, eps=1e-8, fused=True)
    batches = [data.collate(list(range(i, i + args.batch_size))) for i in range(0, len(data), args.batch_size)]
    if device.type == "cuda":
        batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
    rates, step = [], 0
    for window in range(args.repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            b = {k: v.to(device, non_blocking=True) for k, v in batches[step % len(batches)].items()}
            step += 1
            inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
            with autocast(device, precision):
                with torch.no_grad():
                    z_t = teacher(**inputs).logits
                z_s = student(**inputs).logits
            z_s, z_t = z_s.float(), z_t.float()
            kd = -(F.softmax(z_t / TEMPERATURE, -1) * F.log_softmax(z_s / TEMPERATURE, -1)).sum(-1).mean()
            loss = ALPHA * kd + (1 - ALPHA) * F.cross_entropy(z_s, b["labels"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        sync(device)
        if window > 0:  # the first window is the warm-up
            rates.append(args.steps * args.batch_size / (time.perf_counter() - t0))
    return rates


def kdlab_loop(student, teacher, data, args, device, compile: bool, cached: bool) -> List[float]:
    """``kdlab.trainer.train`` on the same data, with the objective, family, loop settings
    and precision of the composed run; its own logged windows' samples/s."""
    exp = Experiment(compose_run(args, device, compile), NullTracker(), device)
    if cached:
        table = teacher_outputs.compute(teacher, data, exp.family, device, exp.precision, args.batch_size)
        outputs = teacher_outputs.CachedTeacher(table)
    else:
        outputs = teacher_outputs.LiveTeacher(teacher, exp.distill_family, device, exp.precision)
    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(LoggerConfig(backend="none", mode="disabled"), tmp, {})
        try:
            train(student, data, exp.distill_family, exp.objective, loop_config(exp.cfg.trainer), tracker, "student",
                  device, exp.precision, teacher_outputs=outputs, compile=exp.cfg.hardware.compile)
        finally:
            tracker.finish()
        rows = [json.loads(line) for line in (Path(tmp) / METRICS_FILE).read_text().splitlines()]
    rates = [r["student/samples_per_s"] for r in rows if "student/samples_per_s" in r]
    return rates[1:]  # the first window is the warm-up


def build_models(args: argparse.Namespace, device: torch.device):
    """Teacher and student as a run builds them (``Experiment.load_teacher`` /
    ``build_student``): the teacher in eval mode on ``device``."""
    exp = Experiment(compose_run(args, device, False), NullTracker(), device)
    teacher = exp.load_teacher()
    student = exp.build_student(teacher)
    return teacher.model.eval().to(device), student.model


def run_rows(args: argparse.Namespace, device: torch.device, precision: str,
             compile: bool) -> Dict[str, List[float]]:
    """Samples/s per window of each loop, after printing the setting."""
    teacher, student = build_models(args, device)
    init = copy.deepcopy(student.state_dict())
    data = RandomTokens(args.batch_size * args.steps * (args.repeats + 1), args.max_length,
                        teacher.config.vocab_size)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}; teacher {args.size} ({sum(q.numel() for q in teacher.parameters()) / 1e6:.1f}M), "
          f"student 2 layers ({sum(q.numel() for q in student.parameters()) / 1e6:.1f}M); batch {args.batch_size}, "
          f"length {args.max_length}, {precision}; median of {args.repeats} windows of {args.steps} steps "
          "after one warm-up window\n")

    def fresh():
        student.load_state_dict(init)
        return student

    rows = {"plain PyTorch loop (live teacher)": plain_loop(fresh(), teacher, data, args, device, precision),
            "kdlab trainer (live teacher)": kdlab_loop(fresh(), teacher, data, args, device, False, False)}
    if compile:
        rows["kdlab trainer, hardware.compile=true (live teacher)"] = kdlab_loop(
            fresh(), teacher, data, args, device, True, False)
    rows["kdlab trainer, cached teacher outputs (no teacher forward)"] = kdlab_loop(
        fresh(), teacher, data, args, device, False, True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    p.add_argument("--size", default="minilm", choices=tuple(SIZES))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--steps", type=int, default=50, help="steps per timed window")
    p.add_argument("--repeats", type=int, default=5, help="timed windows after the warm-up window")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="add a row with hardware.compile=true (default: on CUDA only)")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py: --device cuda but this machine has no CUDA device; use --device cpu")
    precision = "bf16" if device.type == "cuda" else "fp32"
    compile = device.type == "cuda" if args.compile is None else args.compile
    transformers.logging.set_verbosity_error()
    rows = run_rows(args, device, precision, compile)
    base = statistics.median(rows["plain PyTorch loop (live teacher)"])
    print("| loop | samples/s (median) | ms / step | vs plain loop |")
    print("|---|---|---|---|")
    for label, rates in rows.items():
        rate = statistics.median(rates)
        print(f"| {label} | {rate:.0f} | {1000 * args.batch_size / rate:.1f} | {rate / base:.2f}x |")
    print("\ngoal: kdlab (live teacher) >= 0.95x the plain loop; with compile, above it")


if __name__ == "__main__":
    main()
