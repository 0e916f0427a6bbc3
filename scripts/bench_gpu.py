"""kdlab's student step against a plain PyTorch loop doing the same work on the same inputs.

    python scripts/bench_gpu.py --device cuda        # MiniLM-L6-sized teacher, 2-layer student
    python scripts/bench_gpu.py --device cpu --size tiny --steps 5 --repeats 3

Both loops run one KD step per batch: the teacher's forward (no grad), the student's
forward and backward, ``0.5 * CE + 0.5 * KD(T=2)``, gradient clipping and fused AdamW,
under bf16 autocast on CUDA (fp32 on CPU). Models are built from configs with random
weights (no download): the teacher has MiniLM-L6's shape (hidden 384, 6 layers, 12 heads,
intermediate 1536, vocabulary 30522), the student the same with 2 layers; every run starts
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
from transformers import BertConfig, BertForSequenceClassification

from kdlab import divergences, teacher_outputs
from kdlab.config import LoggerConfig
from kdlab.families import get_family
from kdlab.objective import Objective, Term
from kdlab.precision import autocast
from kdlab.tracking import METRICS_FILE, Tracker
from kdlab.trainer import LoopSettings, train

FAMILY = get_family("encoder")
SIZES = {  # BertConfig fields of the teacher; the student has 2 layers
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


def models(size: str, dropout: float = 0.0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    shape = dict(SIZES[size], num_labels=2, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    teacher = BertForSequenceClassification(BertConfig(**shape)).eval()
    student = BertForSequenceClassification(BertConfig(**{**shape, "num_hidden_layers": 2}))
    return teacher, student


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


def kdlab_loop(student, teacher, data, args, device, precision, compile: bool, cached: bool) -> List[float]:
    """``kdlab.trainer.train`` on the same data; its own logged windows' samples/s."""
    objective = Objective(1 - ALPHA, [Term("kd", ALPHA, divergences.get("kd", temperature=TEMPERATURE))])
    if cached:
        table = teacher_outputs.compute(teacher, data, FAMILY, device, precision, args.batch_size)
        outputs = teacher_outputs.CachedTeacher(table)
    else:
        outputs = teacher_outputs.LiveTeacher(teacher, FAMILY, device, precision)
    settings = LoopSettings(epochs=1, max_steps=args.steps * (args.repeats + 1), batch_size=args.batch_size, lr=LR,
                            log_every=args.steps, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(LoggerConfig(backend="none", mode="disabled"), tmp, {})
        try:
            train(student, data, FAMILY, objective, settings, tracker, "student", device, precision,
                  teacher_outputs=outputs, compile=compile)
        finally:
            tracker.finish()
        rows = [json.loads(line) for line in (Path(tmp) / METRICS_FILE).read_text().splitlines()]
    rates = [r["student/samples_per_s"] for r in rows if "student/samples_per_s" in r]
    return rates[1:]  # the first window is the warm-up


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
    teacher, student = models(args.size)
    teacher.to(device)
    init = copy.deepcopy(student.state_dict())
    data = RandomTokens(args.batch_size * args.steps * (args.repeats + 1), args.max_length,
                        SIZES[args.size]["vocab_size"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}; teacher {args.size} ({sum(q.numel() for q in teacher.parameters()) / 1e6:.1f}M), "
          f"student 2 layers ({sum(q.numel() for q in student.parameters()) / 1e6:.1f}M); batch {args.batch_size}, "
          f"length {args.max_length}, {precision}; median of {args.repeats} windows of {args.steps} steps "
          "after one warm-up window\n")

    def fresh():
        student.load_state_dict(init)
        return student

    rows = {"plain PyTorch loop (live teacher)": plain_loop(fresh(), teacher, data, args, device, precision),
            "kdlab trainer (live teacher)": kdlab_loop(fresh(), teacher, data, args, device, precision, False, False)}
    if compile:
        rows["kdlab trainer, hardware.compile=true (live teacher)"] = kdlab_loop(
            fresh(), teacher, data, args, device, precision, True, False)
    rows["kdlab trainer, cached teacher outputs (no teacher forward)"] = kdlab_loop(
        fresh(), teacher, data, args, device, precision, False, True)
    base = statistics.median(rows["plain PyTorch loop (live teacher)"])
    print("| loop | samples/s (median) | ms / step | vs plain loop |")
    print("|---|---|---|---|")
    for label, rates in rows.items():
        rate = statistics.median(rates)
        print(f"| {label} | {rate:.0f} | {1000 * args.batch_size / rate:.1f} | {rate / base:.2f}x |")
    print("\ngoal: kdlab (live teacher) >= 0.95x the plain loop; with compile, above it")


if __name__ == "__main__":
    main()
