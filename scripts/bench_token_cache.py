"""Speed-up of the top-k token-level teacher cache over a multi-epoch causal KD run.

    python scripts/bench_token_cache.py [--samples 256] [--epochs 3] [--top-k 64] [--device cpu]

The run is ``experiment=smoke_causal`` with the sizes below, built as a run builds it
(``kdlab.assembly.Experiment`` on the composed config): teacher ``teacher=tiny_gpt2``
(``--teacher-layers`` x ``--teacher-width`` in ``teacher.overrides``, randomly initialised,
not fine-tuned: fine for timing) with the embedded MiniLM tokenizer; student
``student=shrunk_gpt2`` (1 layer, 64 wide). Data: COPA training examples from
$KDLAB_DATA_DIR (prompt + gold alternative, distilled on the answer tokens). Objective: the
preset's, KD at T = 1 + forward KL. The cached timing includes computing and writing the
cache once; prints both timings and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import transformers
from hydra import compose, initialize_config_dir

from kdlab import teacher_outputs, token_cache
from kdlab.assembly import Experiment, loop_config
from kdlab.cli import CONFIG_DIR
from kdlab.config import LoggerConfig
from kdlab.objective import build_objective
from kdlab.tracking import NullTracker, Tracker
from kdlab.trainer import train
from kdlab.validation import validate


def compose_run(args: argparse.Namespace, device: torch.device, cache_dir: str):
    """``experiment=smoke_causal`` at the benchmark's sizes, as ``kdlab <overrides>`` composes it."""
    overrides = ["experiment=smoke_causal", f"+teacher.overrides.n_layer={args.teacher_layers}",
                 f"+teacher.overrides.n_embd={args.teacher_width}", "+teacher.overrides.n_head=4",
                 f"dataset.max_train_samples={args.samples}", "dataset.max_length=64",
                 f"trainer.batch_size={args.batch_size}", f"trainer.epochs={args.epochs}", "trainer.max_steps=-1",
                 "trainer.lr=1e-3", f"trainer.log_every={10**9}", "trainer.progress=false",
                 f"hardware={device.type}", "hardware.precision=fp32", "logger=none", f"cache_dir={cache_dir}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    validate(cfg)
    return cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--top-k", type=int, default=64)
    p.add_argument("--teacher-layers", type=int, default=4)
    p.add_argument("--teacher-width", type=int, default=256)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    transformers.logging.set_verbosity_error()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        exp = Experiment(compose_run(args, device, tmp), NullTracker(), device)
        teacher = exp.load_teacher()
        ds = exp.encode(teacher.tokenizer, exp.examples("train", args.samples, exp.cfg.seed))
        settings = loop_config(exp.cfg.trainer)
        tracker = Tracker(LoggerConfig(backend="none", mode="disabled"), tmp, {})
        timings = {}
        for mode in ("live", "cached"):
            student = exp.build_student(teacher)
            objective = build_objective(exp.cfg)  # a fresh one per mode, as the run builds it
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            if mode == "live":
                outputs = teacher_outputs.LiveTeacher(teacher.model, exp.family, device, "fp32")
            else:
                outputs = token_cache.teacher_outputs(Path(tmp) / "cache", teacher.model, ds, exp.family, device,
                                                      "fp32", 64, args.top_k, 1.0, 1 << 20)
            train(student.model, ds, exp.family, objective, settings, tracker, mode, device, "fp32",
                  teacher_outputs=outputs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings[mode] = time.perf_counter() - t0
        tracker.finish()
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads; {len(ds)} COPA examples, "
          f"batch {args.batch_size}, {args.epochs} epochs, teacher {args.teacher_layers}x{args.teacher_width}, "
          f"V = {len(teacher.tokenizer)}, k = {args.top_k}, {outputs.bytes_per_token:.1f} bytes per token")
    print(f"live teacher {timings['live']:.1f} s, top-k cache {timings['cached']:.1f} s (including computing "
          f"the cache): {timings['live'] / timings['cached']:.2f}x")


if __name__ == "__main__":
    main()
