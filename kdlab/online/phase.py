"""The online phase: teacher and student trained together in one loop (``kdlab.trainer``).

Both networks sit in one ``Peers`` module, so the loop's full-state checkpoints (both
models, the optimizer state of every parameter group, schedule, RNG, data position) make
the phase resumable like any other. Each network has its own AdamW parameter groups: its
peak rate (``trainer.lr`` / ``online.teacher.lr``), weight decay, and gradient clipping
on its own; AdamW updates each parameter from its own state, so one optimizer over the two
networks' disjoint groups takes exactly the steps two optimizers would. The loss terms of
each network detach the other's prediction (``kdlab.online.losses``), so each network's
gradient comes from its own terms only. Evaluation scores both; the task's main metric of
the student selects the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from kdlab.families.base import Batch, Family, Outputs, Predictions, WrappedFamily
from kdlab.models import Loaded
from kdlab.online import losses
from kdlab.trainer import LoopResult, param_groups, train

PHASE = "online"  # the loop's phase name: logged keys, checkpoints/online/
PEER = "online_teacher"  # results.json key and evaluation prefix of the co-trained teacher


class Peers(torch.nn.Module):
    """The teacher slot and the student, trained together."""

    def __init__(self, teacher: torch.nn.Module, student: torch.nn.Module) -> None:
        super().__init__()
        self.teacher, self.student = teacher, student


@dataclass
class PeerOutputs(Outputs):
    """The student's outputs (what the loop logs and supervises) and the teacher's."""

    teacher: Optional[Outputs] = None


class PeerFamily(WrappedFamily):
    """The run's family applied to both networks of a ``Peers`` module."""

    def forward(self, model: torch.nn.Module, batch: Batch) -> PeerOutputs:
        s = self.base.forward(model.student, batch)
        return PeerOutputs(s.logits, s.mask, teacher=self.base.forward(model.teacher, batch))

    def supervised_loss(self, out: Outputs, batch: Batch) -> torch.Tensor:
        return self.base.supervised_loss(out, batch)

    def predict(self, model: torch.nn.Module, loader: Any, device: torch.device, precision: str) -> Predictions:
        return self.base.predict(model.student, loader, device, precision)


class OnlineObjective(torch.nn.Module):
    """Both networks' losses for the loop: ``loss = student's + teacher's``; the parts are
    logged. It reads no teacher outputs from the loop (the teacher runs in ``PeerFamily``)."""

    needs_teacher = False
    terms: list = []
    features: frozenset = frozenset()

    def __init__(self, cfg: Any, family: Family) -> None:
        super().__init__()
        self.cfg, self.family = cfg, family

    def set_progress(self, *args: Any) -> None:
        return None

    def distillation(self, z_t: torch.Tensor, z_s: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]:
        o = self.cfg
        if o.method == "dml":
            return losses.dml(z_t, z_s, o.temperature, o.t2)
        return losses.balanced(z_t, z_s, o.temperature, o.t2, o.weight_fn, o.scale, o.detach_weights,
                               o.teacher_term)

    def forward(self, out: PeerOutputs, supervised: torch.Tensor, teacher: Any = None,
                labels: Any = None, has_label: Any = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        o, t = self.cfg, self.cfg.teacher
        batch = {"labels": labels, **({"has_label": has_label} if has_label is not None else {})}
        teacher_ce = self.family.supervised_loss(out.teacher, batch)
        kd_s, kd_t, stats = self.distillation(out.teacher.logits, out.logits)
        student = o.ce_weight * supervised + o.kl_weight * kd_s
        teacher_loss = t.ce_weight * teacher_ce + t.kl_weight * kd_t
        parts = {"loss": student + teacher_loss, "student": student, "ce": supervised, "kd": kd_s,
                 "teacher": teacher_loss, "teacher_ce": teacher_ce, "teacher_kd": kd_t, **stats}
        return parts["loss"], parts


def split_dev(summary: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The loop's summary (``kdlab.products.summarise``) split into the student's and the
    online teacher's: their ``dev``, ``dev_last`` and ``dev_best`` metrics."""
    prefix = PEER + "/"
    student, peer = dict(summary), {}
    for key in ("dev", "dev_last", "dev_best"):
        if key in summary:
            student[key] = {k: v for k, v in summary[key].items() if not k.startswith(prefix)}
            peer[key] = {k[len(prefix):]: v for k, v in summary[key].items() if k.startswith(prefix)}
    return student, peer


def fit(exp: Any, teacher: Loaded, student: Loaded, train_ds: Any, evals: Dict[str, Any], checkpoint_dir: Path,
        resume: bool, meta: Optional[Dict[str, Any]], loop: Any) -> LoopResult:
    """Train ``teacher`` and ``student`` together on ``train_ds`` (the loop settings
    ``loop`` are the student's, from ``trainer``); both are left trained (under
    ``select=best``, with the weights of the student's best evaluation)."""
    cfg = exp.cfg
    t = cfg.online.teacher
    peers = Peers(teacher.model, student.model)
    groups = (param_groups(student.model, loop.weight_decay, lr=loop.lr, clip="student")
              + param_groups(teacher.model, t.weight_decay, lr=t.lr, clip="teacher", max_grad_norm=t.max_grad_norm))

    def evaluate(model: Peers) -> Dict[str, float]:
        return {**exp.evaluate(model.student, evals),
                **{f"{PEER}/{k}": v for k, v in exp.evaluate(model.teacher, evals).items()}}

    return train(peers, train_ds, PeerFamily(exp.family), OnlineObjective(cfg.online, exp.family), loop,
                 exp.tracker, PHASE, exp.device, exp.precision, evaluate=evaluate, metric=exp.task.metric,
                 checkpoint_dir=checkpoint_dir, resume=resume, meta=meta,
                 groups=groups)
