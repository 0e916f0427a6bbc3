"""The training loop: plain PyTorch, readable top to bottom.

AdamW, a linear schedule with optional warmup, gradient clipping and accumulation,
autocast from the ``hardware`` group with losses in float32, evaluation every N steps
or per epoch with model selection by the task's main metric, early stopping, full-state
checkpoints for resuming, and rank-awareness under DDP. The same loop fine-tunes
teachers (labels only) and distils students.

The loop never waits for the device between logging steps: losses, term values and the
non-finite check stay on the device (``kdlab.nonfinite``, ``kdlab.tracking.DeviceMeans``)
and are read once per logging window; batches are copied from pinned memory without
blocking on CUDA; AdamW is the fused kernel. ``compile=True`` runs the training forward
through ``torch.compile`` (``kdlab.compilation``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from kdlab import checkpoint, distributed
from kdlab.compilation import maybe_compile
from kdlab.config import LoopConfig
from kdlab.families.base import Family, Outputs
from kdlab.nonfinite import NonFiniteGuard
from kdlab.objective import Objective
from kdlab.on_policy import OnPolicy
from kdlab.precision import autocast
from kdlab.teacher_outputs import teacher_for
from kdlab.tracking import DeviceMeans, Tracker

log = logging.getLogger(__name__)

# The loop's settings are the schema's ``LoopConfig`` (``trainer``, ``teacher.finetune``, a
# term's pre-stage); the former name stays for callers that build them by hand.
LoopSettings = LoopConfig


@dataclass
class LoopResult:
    steps: int
    evaluations: List[Dict[str, Any]] = field(default_factory=list)  # {"step", "metrics"}
    best_step: Optional[int] = None
    skipped_steps: int = 0
    on_policy: Optional[Dict[str, Any]] = None  # OnPolicy.summary() of an on-policy loop


class EpochSampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch, sharded across ranks, resumable mid-epoch.

    Epoch ``e`` uses ``randperm(n, seed + e)``; a resumed run skips the batches already
    consumed instead of replaying them, so data order is identical to an uninterrupted run.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.skip_batches = 0, 0

    def indices(self) -> List[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        # Equal shards: drop the tail that does not divide across ranks.
        per_rank = len(perm) // self.world
        return perm[self.rank * per_rank:(self.rank + 1) * per_rank] if self.world > 1 else perm

    def __iter__(self):
        return iter(self.indices()[self.skip_batches * self.batch_size:])

    def __len__(self) -> int:
        return len(self.indices()) - self.skip_batches * self.batch_size


def total_steps(settings: LoopConfig, batches_per_epoch: int) -> int:
    """Optimiser steps: ``max_steps``, or ``epochs`` worth of (accumulated) batches."""
    if settings.max_steps > 0:
        return settings.max_steps
    return max(1, math.ceil(settings.epochs * batches_per_epoch / settings.grad_accum))


def total_epochs(settings: LoopConfig, batches_per_epoch: int) -> int:
    """Data epochs the loop runs, a partial last one counted (the KD temperature's per-epoch
    schedule reads it): ``ceil(epochs)``, or the epochs that ``max_steps`` spans."""
    if settings.max_steps > 0:
        return max(1, math.ceil(settings.max_steps * settings.grad_accum / batches_per_epoch))
    return max(1, math.ceil(settings.epochs))


def param_groups(model: torch.nn.Module, weight_decay: float, **extra: Any) -> List[Dict[str, Any]]:
    """AdamW groups of ``model``: weight decay on weights, none on biases and norms; ``extra``
    keys (``lr``, ``clip``) are added to both."""
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    return [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
         "weight_decay": weight_decay, **extra},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0, **extra},
    ]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def train(
    model: torch.nn.Module,
    dataset: Any,
    family: Family,
    objective: Objective,
    settings: LoopConfig,
    tracker: Tracker,
    phase: str,
    device: torch.device,
    precision: str = "fp32",
    teacher_outputs: Optional[Callable[[Dict[str, torch.Tensor]], Outputs]] = None,
    evaluate: Optional[Callable[[torch.nn.Module], Dict[str, float]]] = None,
    metric: Optional[str] = None,
    checkpoint_dir: Optional[Path] = None,
    resume: bool = False,
    meta: Optional[Dict[str, Any]] = None,
    compile: bool = False,
    groups: Optional[List[Dict[str, Any]]] = None,
    on_policy: Optional[OnPolicy] = None,
) -> LoopResult:
    """Train ``model`` on ``dataset``; returns the steps taken and every evaluation.

    ``teacher_outputs(batch)`` gives the teacher's outputs for a batch (live or cached);
    ``evaluate(model)`` returns dev metrics. With ``select="best"`` the model is left with
    the weights of its best evaluation by ``metric``. ``compile``: the training forward
    through ``torch.compile`` (eager, after one warning, where compilation fails).
    ``groups``: AdamW parameter groups in place of ``param_groups(model, weight_decay)``;
    a group may carry its own ``lr`` (the schedule scales each group's peak rate by the
    same factor), a ``clip`` name and ``max_grad_norm``: gradients are clipped per name
    (the networks of an online phase, each clipped on its own) at that name's norm.
    ``on_policy``: part of each micro-batch's answers sampled from ``model`` before the
    teacher scores them (``kdlab.on_policy``); its schedule is saved with the checkpoints.
    """
    if objective.needs_teacher and teacher_outputs is None:
        raise ValueError("distillation objective without a teacher")
    rank, world = distributed.rank(), distributed.world_size()
    sampler = EpochSampler(len(dataset), settings.batch_size, settings.seed, rank, world)
    # A private generator: creating a loader iterator must not draw from the global RNG, or a
    # resumed run's dropout masks would shift by one draw.
    # Pinned batches let the copy to the GPU run without blocking the host.
    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, sampler=sampler,
                                         collate_fn=dataset.collate, generator=torch.Generator(),
                                         pin_memory=device.type == "cuda")
    batches_per_epoch = len(sampler.indices()) // settings.batch_size + bool(len(sampler.indices()) % settings.batch_size)
    steps, epochs = total_steps(settings, batches_per_epoch), total_epochs(settings, batches_per_epoch)
    model.to(device).train()
    train_model = maybe_compile(distributed.wrap(model, device), compile)
    groups = list(groups) if groups is not None else param_groups(model, settings.weight_decay)
    clip_sets: Dict[str, List[torch.nn.Parameter]] = {}
    clip_norms: Dict[str, float] = {}
    for g in groups:
        clip_sets.setdefault(g.get("clip", ""), []).extend(g["params"])
        clip_norms[g.get("clip", "")] = g.get("max_grad_norm", settings.max_grad_norm)
    extra = list(objective.to(device).parameters())  # learned projections of feature terms
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0})
    # The fused kernel: one launch for all parameters on CUDA, ~6x faster than the default on
    # CPU (15M-parameter embeddings), and it skips a flagged step on the device (nonfinite.py).
    fused = device.type in ("cpu", "cuda") and all(p.device.type == device.type for g in groups for p in g["params"])
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, eps=1e-8, fused=fused)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * steps), steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    result = LoopResult(steps=0)
    window = DeviceMeans()  # each term's mean over the logging window
    best_value, bad_evals, best_state = -math.inf, 0, None
    micro, epoch_batches = 0, 0  # micro-batches consumed in this accumulation / this epoch
    if resume and checkpoint_dir is not None:
        state = checkpoint.load_latest(checkpoint_dir, (meta or {}).get("config"))
        if state is not None:
            model.load_state_dict(state["model"])
            objective.load_state_dict(state["objective"])  # learned projections of feature terms
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            checkpoint.set_rng_state(state["rng"])
            sampler.epoch, epoch_batches = state["epoch"], state["epoch_batches"]
            result = LoopResult(**state["result"])
            best_value, bad_evals, best_state = state["best_value"], state["bad_evals"], state["best_state"]
            if on_policy is not None:
                on_policy.load_state_dict(state["on_policy"])
            log.info("%s: resumed from step %d (%s)", phase, result.steps, state["meta"]["step"])
    guard = NonFiniteGuard(settings.on_nan, phase, device, skipped=result.skipped_steps)

    def check_finite() -> None:
        """The device's non-finite flags, read (a host synchronisation): raises under stop."""
        result.skipped_steps = guard.check()

    def save_checkpoint() -> None:
        check_finite()  # never a checkpoint of, or after, a step that stop refuses
        if checkpoint_dir is None or not distributed.is_main():
            return
        state = {
            "model": model.state_dict(), "objective": objective.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "rng": checkpoint.rng_state(), "epoch": sampler.epoch, "epoch_batches": epoch_batches,
            "result": result.__dict__, "best_value": best_value, "bad_evals": bad_evals,
            "best_state": best_state, "on_policy": None if on_policy is None else on_policy.state_dict(),
        }
        checkpoint.save(checkpoint_dir, result.steps, state, meta or {}, settings.keep_last)

    def run_evaluation() -> bool:
        """Evaluate (rank 0), track the best; returns True when early stopping triggers."""
        nonlocal best_value, bad_evals, best_state
        check_finite()
        stop = False
        if distributed.is_main() and evaluate is not None:
            metrics = evaluate(model)
            if on_policy is not None:  # the adaptive schedule reads the dev loss
                tracker.log({"phase": phase, "phase_step": result.steps,
                             **{f"{phase}/{k}": v for k, v in on_policy.after_evaluation(model).items()}})
            model.train()
            result.evaluations.append({"step": result.steps, "metrics": metrics})
            tracker.log({"phase": phase, "phase_step": result.steps,
                         **{f"{phase}/eval/{k}": v for k, v in metrics.items()}})
            value = metrics.get(metric, -math.inf) if metric else -math.inf
            if value > best_value:
                best_value, bad_evals, result.best_step = value, 0, result.steps
                if settings.select == "best":
                    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                bad_evals += 1
            stop = settings.patience > 0 and bad_evals >= settings.patience
        return distributed.broadcast_flag(stop)

    # Throughput: samples per second of wall time over the last logging window, so warm-up
    # (allocator, kernel autotuning) leaves the curve after one window; the phase-long
    # average, which keeps it for hundreds of steps, is `samples_per_s_cumulative`.
    t0, seen = time.perf_counter(), 0
    window_t0, window_seen = t0, 0
    bar = tqdm(total=steps, initial=result.steps, desc=phase, dynamic_ncols=True,
               disable=not settings.progress or not distributed.is_main())
    stopped = result.steps >= steps
    if on_policy is not None and not stopped:
        on_policy.start(model)  # the adaptive schedule's first dev loss
    optimizer.zero_grad(set_to_none=True)
    while not stopped:
        sampler.skip_batches = epoch_batches
        for batch in loader:
            objective.set_progress(result.steps / steps, sampler.epoch, epochs)
            host_batch, batch = batch, {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if on_policy is not None:  # micro-batch number: the same rows drawn after a resume
                batch = on_policy(model, batch, result.steps * settings.grad_accum + micro)
                host_batch = None  # the drawn rows exist on the device only
            teacher = teacher_for(teacher_outputs, batch, host_batch, device) if objective.needs_teacher else None
            with autocast(device, precision):
                out = family.forward(train_model, batch)
            loss, parts = objective(out, family.supervised_loss(out, batch), teacher, labels=batch["labels"],
                                    has_label=batch.get("has_label"))
            epoch_batches += 1
            values, finite = guard.micro_batch(parts)  # no host synchronisation
            window.add(list(parts), values, finite)
            # Dividing by the number of micro-batches makes accumulation equal a larger batch.
            scaler.scale(loss / settings.grad_accum).backward()
            micro += 1
            seen += batch["labels"].shape[0] * world
            if micro < settings.grad_accum:
                continue
            micro = 0
            distributed.average_gradients(extra)  # DDP syncs the model's gradients, not these
            scaler.unscale_(optimizer)
            grad_norm = torch.stack([torch.nn.utils.clip_grad_norm_(ps, clip_norms[k])
                                     for k, ps in clip_sets.items()]).norm()  # the total norm before clipping
            if guard.before_step(optimizer, grad_norm, result.steps + 1, fused):
                scaler.step(optimizer)  # a flagged step changes nothing (found_inf)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            result.steps += 1
            bar.update(1)
            log_now = result.steps % settings.log_every == 0 or result.steps == steps
            if log_now:
                check_finite()  # every rank: under DDP all of them stop
            if log_now and distributed.is_main():
                now = time.perf_counter()
                means = window.means()
                bar.set_postfix(loss=f"{means['loss']:.4f}", samples_s=f"{seen / max(now - t0, 1e-9):.1f}")
                row = {"phase": phase, "phase_step": result.steps,
                       **{f"{phase}/{k}": v for k, v in means.items()},
                       f"{phase}/lr": scheduler.get_last_lr()[0], f"{phase}/grad_norm": float(grad_norm),
                       f"{phase}/samples_per_s": (seen - window_seen) / max(now - window_t0, 1e-9),
                       f"{phase}/samples_per_s_cumulative": seen / max(now - t0, 1e-9)}
                window_t0, window_seen = now, seen
                if on_policy is not None:
                    row.update({f"{phase}/{k}": v for k, v in on_policy.window().items()})
                agree = agreement(out, teacher) if teacher is not None else math.nan
                if not math.isnan(agree):  # no common classes: nothing to report
                    row[f"{phase}/agreement"] = agree
                for term in objective.terms:
                    for k, v in (term.module.last_stats or {}).items():
                        if isinstance(v, (int, float, torch.Tensor)):  # not labels such as the backend
                            row[f"{phase}/{term.name}/{k}"] = float(v)
                tracker.log(row)
            if settings.eval_strategy == "steps" and settings.eval_every > 0 \
                    and result.steps % settings.eval_every == 0 and result.steps < steps:
                stopped = run_evaluation()
            if settings.save_every > 0 and result.steps % settings.save_every == 0:
                save_checkpoint()
            if stopped or result.steps >= steps:
                stopped = True
                break
        else:  # the epoch ran out
            sampler.epoch, epoch_batches = sampler.epoch + 1, 0
            if settings.eval_strategy == "epoch" and result.steps < steps:
                stopped = run_evaluation()
    bar.close()
    check_finite()
    if evaluate is not None and not (result.evaluations and result.evaluations[-1]["step"] == result.steps):
        run_evaluation()  # the last checkpoint is always evaluated
    if on_policy is not None:
        result.on_policy = on_policy.summary()
    if settings.save_every > 0:
        save_checkpoint()
    if settings.select == "best" and best_state is not None:
        model.load_state_dict(best_state)
    return result


@torch.no_grad()
def agreement(student: Outputs, teacher: Outputs) -> float:
    """Fraction of (unmasked) positions where student and teacher argmax agree."""
    if teacher.sparse is not None:  # a top-k token cache: its first index is the argmax
        t_argmax = teacher.sparse.index[..., 0]
    elif student.logits.shape[-1] == 1 or student.logits.shape != teacher.logits.shape:
        return float("nan")  # regression, or different vocabularies: no common classes
    else:
        t_argmax = teacher.logits.argmax(-1)
    same = student.logits.argmax(-1) == t_argmax
    if student.mask is not None:
        same = same[student.mask]
    return same.float().mean().item() if same.numel() else float("nan")
