"""Speed-up of the top-k token-level teacher cache over a multi-epoch causal KD run.

    python scripts/bench_token_cache.py [--samples 256] [--epochs 3] [--top-k 64] [--device cpu]

Teacher: a GPT-2 built from code (``--teacher-layers`` x ``--teacher-width``, randomly
initialised: fine for timing) with the embedded MiniLM tokenizer; student: 1 layer, 64 wide.
Data: the first COPA training examples from $KDLAB_DATA_DIR (prompt + gold alternative,
distilled on the answer tokens). Objective: KD at T = 1 + forward KL. The cached timing
includes computing and writing the cache once; prints both timings and the ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import transformers
from omegaconf import OmegaConf

from kdlab import divergences, teacher_outputs, token_cache
from kdlab.config import DatasetConfig, LoggerConfig, StudentConfig, TeacherConfig
from kdlab.data import get_task, load_split
from kdlab.families import get_family
from kdlab.models import STUDENTS, TEACHERS
from kdlab.objective import Objective, Term
from kdlab.tracking import Tracker
from kdlab.trainer import LoopSettings, train

TASK = "superglue/copa"


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
    family = get_family("causal")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tcfg = TeacherConfig(name="tiny", family="causal",
                             overrides={"n_layer": args.teacher_layers, "n_embd": args.teacher_width, "n_head": 4})
        teacher = TEACHERS.get("tiny")(OmegaConf.structured(tcfg), 2, tmp, family)
        scfg = StudentConfig(name="shrunk", overrides={"n_layer": 1, "n_embd": 64, "n_head": 2})
        examples = load_split(TASK, "train", data_dir=os.environ.get("KDLAB_DATA_DIR"), max_samples=args.samples)
        ds = family.dataset(teacher.tokenizer, examples, get_task(TASK),
                            OmegaConf.structured(DatasetConfig(name=TASK, max_length=64)))
        settings = LoopSettings(epochs=args.epochs, max_steps=-1, batch_size=args.batch_size, lr=1e-3,
                                progress=False, log_every=10**9)
        tracker = Tracker(LoggerConfig(backend="none", mode="disabled"), tmp, {})
        timings = {}
        for mode in ("live", "cached"):
            torch.manual_seed(0)
            student = STUDENTS.get("shrunk")(OmegaConf.structured(scfg), teacher, 2, family)
            objective = Objective(0.1, [Term("kd", 0.9, divergences.get("kd")), Term("kl", 1.0, divergences.get("kl"))])
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            if mode == "live":
                outputs = teacher_outputs.LiveTeacher(teacher.model, family, device, "fp32")
            else:
                outputs = token_cache.teacher_outputs(Path(tmp) / "cache", teacher.model, ds, family, device, "fp32",
                                                      64, args.top_k, 1.0, 1 << 20)
            train(student.model, ds, family, objective, settings, tracker, mode, device, "fp32",
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
