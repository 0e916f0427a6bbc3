"""Peak memory of one ``experiment=smoke_causal`` student step at vocabulary 32,000, kdlab's
training loop against a plain KL step on the same logits.

The teacher and student are the preset's (``teacher=tiny_gpt2``: GPT-2 2 x 128;
``student=shrunk_gpt2``: 1 x 64), built as a run builds them (``kdlab.assembly.Experiment``)
from the composed config with ``teacher.overrides.vocab_size`` set to the vocabulary
(random weights, nothing downloaded). Both models are told that their tokenizer has all
``V`` tokens (``kdlab.models.carry_tokenizer_size``; the builders record the 30,522-token
MiniLM tokenizer's size), so the logits keep all ``V`` columns and the random ids use them
all. The batch has the preset's shape (16 sequences of 48 tokens, answer windows of 12
positions holding 4 to 12 answer tokens) with random token ids.

Each variant runs in a fresh interpreter (``--variant``), so neither inherits the other's
allocator caches: models and batch are built, then the peak resident set is reset
(``/proc/self/clear_refs``) and one step is run; the figure is the growth of the peak
resident set (``VmHWM``) over the resident set before the step (Linux; the CPU only).

- ``kdlab``: one step of ``kdlab.trainer.train`` (``max_steps=1``) with the preset's
  objective (``build_objective``: 0.1 CE + 0.9 KD + KL at T = 1) and a live teacher: the
  teacher's forward, the student's forward and backward, clipping, fused AdamW, the
  logging step.
- ``plain_kl``: the same models and batch written plainly: the teacher's forward under
  ``no_grad``, the student's forward, the answer tokens selected with the mask,
  ``F.kl_div`` on float32 log-softmaxes, backward, clipping, fused AdamW.
- ``plain_objective``: as ``plain_kl`` with the preset's whole objective (``F.cross_entropy``
  + KD + ``F.kl_div``, log-softmaxes shared).

    OMP_NUM_THREADS=1 python scripts/bench_token_memory.py [--vocab 32000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_divergences import peak_memory  # noqa: E402

VARIANTS = ("plain_kl", "plain_objective", "kdlab")
BATCH, LENGTH, ANSWER = 16, 48, 12


def compose(vocab: int, cache_dir: Optional[str] = None):
    """``experiment=smoke_causal`` at vocabulary ``vocab``; ``cache_dir`` None: the config's
    own (``$KDLAB_CACHE_DIR``, else ~/.cache/kdlab)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from kdlab.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose("config", overrides=["experiment=smoke_causal", "output_dir=/tmp/kdlab-bench-token-memory",
                                                  f"+teacher.overrides.vocab_size={vocab}",
                                                  *([f"cache_dir={cache_dir}"] if cache_dir else [])])


def setup(vocab: int, cache_dir: Optional[str] = None):
    """The preset's objective, teacher, student and loop settings, and one batch: the models
    and objective a run of the composed config builds (``kdlab.assembly.Experiment``)."""
    from kdlab.assembly import Experiment
    from kdlab.models import carry_tokenizer_size
    from kdlab.tracking import NullTracker

    cfg = compose(vocab, cache_dir)
    exp = Experiment(cfg, NullTracker(), torch.device("cpu"))
    teacher = exp.load_teacher()
    student = exp.build_student(teacher)
    assert teacher.model.config.vocab_size == vocab == student.model.config.vocab_size
    for model in (teacher.model, student.model):  # every row is a token: the logits keep all V columns
        carry_tokenizer_size(model, vocab)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(4, ANSWER + 1, (BATCH,), generator=g)
    ids = torch.randint(0, vocab, (BATCH, LENGTH), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "target_ids": ids[:, -ANSWER:],
             "target_mask": torch.arange(ANSWER)[None, :] >= ANSWER - lengths[:, None],
             "labels": torch.zeros(BATCH, dtype=torch.long), "index": torch.arange(BATCH)}
    return cfg, exp.family, teacher.model.eval(), student.model, exp.objective, batch


class OneBatch(torch.utils.data.Dataset):
    """The batch, as a dataset of its rows."""

    def __init__(self, batch: Dict[str, torch.Tensor]) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return BATCH

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, idx) -> Dict[str, torch.Tensor]:
        return {k: v[torch.tensor(idx)] for k, v in self.batch.items()}


def run_variant(variant: str, vocab: int, cache_dir: str) -> Dict[str, float]:
    from kdlab.assembly import loop_config
    from kdlab.config import LoggerConfig
    from kdlab.teacher_outputs import LiveTeacher
    from kdlab.tracking import Tracker
    from kdlab.trainer import train

    cfg, family, teacher, student, objective, batch = setup(vocab, cache_dir)
    cpu = torch.device("cpu")
    mask = batch["target_mask"]

    if variant == "kdlab":
        settings = replace(loop_config(cfg.trainer), max_steps=1, batch_size=BATCH, log_every=1)  # the run's loop, one step
        tracker = Tracker(LoggerConfig(backend="none", mode="disabled"), "/tmp/kdlab-bench-token-memory", {})

        def step() -> None:
            train(student, OneBatch(batch), family, objective, settings, tracker, "bench", cpu,
                  teacher_outputs=LiveTeacher(teacher, family, cpu, "fp32"))
    else:
        optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.trainer.lr, fused=True)

        def step() -> None:
            with torch.no_grad():
                z_t = family.forward(teacher, batch).logits[mask].float()  # [N, V]
            z_s = family.forward(student, batch).logits[mask].float()
            log_q, log_p = F.log_softmax(z_s, -1), F.log_softmax(z_t, -1)
            loss = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
            if variant == "plain_objective":
                ce = F.cross_entropy(z_s, batch["target_ids"][mask])
                loss = 0.1 * ce + 0.9 * -(log_p.exp() * log_q).sum(-1).mean() + loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.trainer.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    peak = peak_memory(step)
    return {"variant": variant, "peak_mb": peak, "answer_tokens": int(mask.sum()), "positions": mask.numel()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--cache-dir", default="/tmp/kdlab-bench-token-memory-cache")
    parser.add_argument("--variant", choices=VARIANTS, help="run one variant in this process (JSON out)")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.vocab, args.cache_dir)))
        return
    rows = {}
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--vocab", str(args.vocab),
                              "--cache-dir", args.cache_dir], check=True, capture_output=True, text=True)
        rows[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    r = rows["kdlab"]
    print(f"## One smoke_causal student step at V = {args.vocab}: {r['answer_tokens']} answer tokens of "
          f"{r['positions']} window positions; growth of the peak resident set, one fresh process each\n")
    print("| step | peak memory growth | vs plain KL step |\n|---|---|---|")
    base = rows["plain_kl"]["peak_mb"]
    for variant in VARIANTS:
        mb = rows[variant]["peak_mb"]
        ratio = f"{mb / base:.2f}x" if mb is not None and base else "n/a"
        print(f"| {variant} | {'n/a' if mb is None else f'{mb:.0f} MB'} | {ratio} |")


if __name__ == "__main__":
    main()
