"""Logit terms that read gold labels: DKD, PLD and DEMD (EMO).

They take ``(z_s, z_t, mask=None, labels=...)`` with ``z [B, C]`` class logits,
``labels [B]`` class indices and ``mask`` None or ``[B]`` bool (the rows to average over:
the objective passes ``has_label``, so transfer rows, whose labels mean nothing, get no
value and exactly zero gradient; a batch without a kept row gives 0). The rows are masked
on the device, never selected, so the term does not wait for the device. They declare
``Reads.LABELS``: the objective passes the batch's labels, and a configuration without
class labels (a regression task, or a family whose logits are not over the task's classes)
is rejected when the objective is built.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.divergences.base import check_choice, check_range, compute_dtype, no_autocast
from kdlab.errors import ConfigError
from kdlab.families.base import Family
from kdlab.methods import LABEL_TERMS
from kdlab.terms import LOGITS, LogitTerm, Reads


def check_class_inputs(name: str, z_s: Tensor, z_t: Tensor, labels: Optional[Tensor], need_labels: bool = True) -> None:
    if z_s.dim() != 2 or z_t.shape != z_s.shape:
        raise ValueError(f"{name} takes [B, C] class logits of equal shapes, got {tuple(z_s.shape)} "
                         f"and {tuple(z_t.shape)}")
    if not need_labels:
        return
    if labels is None:
        raise ValueError(f"{name} needs gold labels: call it with labels=[B] class indices")
    if labels.shape != z_s.shape[:1] or labels.is_floating_point():
        raise ValueError(f"{name}: labels must be [B] class indices, got {tuple(labels.shape)} {labels.dtype}")


class LabelTerm(LogitTerm):
    reads = LOGITS | Reads.TOKEN_MASK | Reads.LABELS  # the mask only to refuse one
    needs_class_distributions = True  # class logits [B, C] with C > 1

    def check_setting(self, task: Any, family: Family) -> None:
        """Reject a task or model family that cannot give this term class labels."""
        if Reads.LABELS in self.reads and task.is_regression:
            raise ConfigError(f"needs class labels, but dataset={task.name} is a regression task")
        if not family.class_logits:
            raise ConfigError(f"needs [B, C] class logits and class labels: teacher.family=encoder "
                              f"(teacher.family={family.name} scores answer tokens)")

    def check_mask(self, mask: Optional[Tensor], z_s: Tensor) -> None:
        if mask is not None and (mask.shape != z_s.shape[:1] or mask.dtype != torch.bool):
            raise ValueError(f"{type(self).__name__} takes [B, C] class logits and a [B] bool row mask, "
                             f"got a mask {tuple(mask.shape)} {mask.dtype}")


def row_mean(values: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Mean of ``values [B]`` over the rows ``mask [B]`` keeps (all without one), 0 if none;
    dropped rows are replaced by exact zeros on the device (no host synchronisation)."""
    if mask is None:
        return values.mean()
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp_min(1).to(values.dtype)


def one_hot(labels: Tensor, classes: int) -> Tensor:
    """``[B, C]`` bool, True at each row's label. ``F.one_hot`` checks the labels' range on
    the host (a synchronisation) outside CUDA."""
    return labels[:, None] == torch.arange(classes, device=labels.device)


@LABEL_TERMS.register("dkd")
class DecoupledKD(LabelTerm):
    """DKD, decoupled knowledge distillation (Zhao et al., CVPR 2022; code
    megvii-research/mdistiller ``mdistiller/distillers/DKD.py`` @a08d46f).

    With ``p = softmax(z_t / T)``, ``q = softmax(z_s / T)`` and gold class ``y``:

    - TCKD = ``KL(b_T || b_S)``, ``b = [p_y, 1 - p_y]`` (target vs all non-target mass);
    - NCKD = ``KL(p_hat_T || p_hat_S)``, ``p_hat = softmax(z / T - 1000 * onehot_y)`` (the
      distribution among the non-target classes);
    - each summed over classes and divided by B, times T^2;
    - value ``min(epoch / warmup, 1) * (alpha * TCKD + beta * NCKD)``. The cross-entropy
      ``ce_w * CE`` of the paper is the objective's CE term (``objective.ce_weight``).

    Teacher first (reference) in both KLs; the teacher is detached. ``epoch`` is the
    1-based epoch of training, as in mdistiller: ``set_progress(fraction, ...)`` gives
    ``epoch = floor(fraction * epochs) + 1`` with ``epochs`` the run's ``trainer.epochs``
    (``set_training_epochs``, called by ``build_objective``). Defaults (CIFAR-100): alpha 1, beta 8,
    T 4, warmup 20 epochs; ImageNet: T 1, warmup 1, beta 0.5.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 warmup: float = 20.0) -> None:
        super().__init__()
        self.alpha = check_range("alpha", alpha, 0.0)
        self.beta = check_range("beta", beta, 0.0)
        self.temperature = check_range("temperature", temperature, 0.0, low_open=True)
        self.warmup = check_range("warmup", warmup, 0.0, low_open=True)
        self.epochs: Optional[float] = None  # trainer.epochs, for set_progress
        self.epoch = math.inf  # the current 1-based epoch; inf = warm-up over (outside training)

    def set_training_epochs(self, epochs: float) -> None:
        self.epochs = float(epochs)

    def set_progress(self, fraction: float, epoch: int, epochs: int) -> None:
        if self.epochs is None:
            raise ValueError("dkd: set_training_epochs(epochs) before set_progress (build_objective does)")
        self.epoch = math.floor(min(max(fraction, 0.0), 1.0) * self.epochs) + 1

    @property
    def warmup_factor(self) -> float:
        return min(self.epoch / self.warmup, 1.0)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, mask: Optional[Tensor] = None,
                labels: Optional[Tensor] = None) -> Tensor:
        check_class_inputs("dkd", student_logits, teacher_logits, labels)
        self.check_mask(mask, student_logits)
        with no_autocast(student_logits):
            s, t = compute_dtype(student_logits), compute_dtype(teacher_logits.detach())
            T = self.temperature
            gt = one_hot(labels, s.shape[-1]).to(s.dtype)  # [B, C]
            p_s, p_t = torch.softmax(s / T, -1), torch.softmax(t / T, -1)
            b_s = torch.stack([(p_s * gt).sum(-1), (p_s * (1 - gt)).sum(-1)], -1)  # [B, 2]
            b_t = torch.stack([(p_t * gt).sum(-1), (p_t * (1 - gt)).sum(-1)], -1)
            tckd = (torch.special.xlogy(b_t, b_t) - b_t * torch.log(b_s)).sum(-1) * T**2  # [B]
            log_hat_s = torch.log_softmax(s / T - 1000.0 * gt, -1)
            hat_t = torch.softmax(t / T - 1000.0 * gt, -1)
            nckd = (torch.special.xlogy(hat_t, hat_t) - hat_t * log_hat_s).sum(-1) * T**2  # [B]
            return self.warmup_factor * row_mean(self.alpha * tckd + self.beta * nckd, mask)


@LABEL_TERMS.register("pld")
class PlackettLuceKD(LabelTerm):
    """PLD, Plackett-Luce distillation (Bassam, Zhu, Bian 2025; the paper's appendix code).

    The teacher-optimal permutation ``pi = (y, then the other classes by descending teacher
    logit)``; with student logits ``s`` (no temperature) and teacher logits ``t``::

        L = sum_k alpha_k [ logsumexp_{l >= k} s_{pi_l} - s_{pi_k} ],
        alpha_k = softmax(t / tau)_{pi_k}

    summed over classes, mean over the batch. Its first term (k = 0) is the cross-entropy of
    the gold class weighted by the teacher's probability of it. It replaces CE + KD: use it
    with ``objective.alpha=0 objective.ce_weight=0``. Teacher detached (weights and order).
    Default tau = 1 (ImageNet best; 4 on CIFAR-100).
    """

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__()
        self.tau = check_range("tau", tau, 0.0, low_open=True)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, mask: Optional[Tensor] = None,
                labels: Optional[Tensor] = None) -> Tensor:
        check_class_inputs("pld", student_logits, teacher_logits, labels)
        self.check_mask(mask, student_logits)
        with no_autocast(student_logits):
            s, t = compute_dtype(student_logits), compute_dtype(teacher_logits.detach())
            # ascending by teacher logit, the gold class moved last (= pi read backwards)
            key = t.masked_fill(one_hot(labels, s.shape[-1]), math.inf)
            order = key.argsort(dim=-1, stable=True)  # [B, C]
            s_perm, t_perm = s.gather(-1, order), t.gather(-1, order)
            per_position = torch.logcumsumexp(s_perm, dim=-1) - s_perm
            weights = torch.softmax(t_perm / self.tau, dim=-1)
            return row_mean((weights * per_position).sum(-1), mask)


def class_embeddings(model: torch.nn.Module) -> Tensor:
    """The rows a model scores its outputs with: its LM head, or a classifier's weight."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        head = getattr(model, "classifier", None)
        head = getattr(head, "out_proj", head)  # RoBERTa-style heads
    weight = getattr(head, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise ConfigError(f"demd: cannot find the output embeddings of the {type(model).__name__} student "
                          "(an LM head, or a linear classifier)")
    return weight


@LABEL_TERMS.register("demd")
class DEMD(LabelTerm):
    """DEMD of EMO (Ren et al., "EMO: Earth Mover Distance Optimization for Auto-Regressive
    Language Modeling", ICLR 2024; code DRSY/EMO @14da9d5). A gold-target term.

    ``E``: the student's output embeddings (LM head rows; for a classifier, the rows of its
    linear head), L2-normalised and detached: a frozen copy taken when the objective is
    bound (``frozen=True``, default) or the current ones. Cost ``C(i, j) = 1 - cos(e_i, e_j)``;
    with the student's ``q = softmax(z_s)``::

        DEMD = sum_i q_i C(i, y) = 1 - e_y . (E^T q)
        value = mean_tokens 0.5 * (MLE + sg(MLE / DEMD) * DEMD),  MLE = -log q_y

    The value contains the MLE term: use it with ``objective.ce_weight=0`` (it replaces CE).

    ``target="teacher"`` is an EXTENSION, not in the paper: the teacher distribution
    ``p = softmax(z_t / T)`` replaces the one-hot target, value
    ``mean (1 - (E^T p) . (E^T q))`` (the expected cost under the independent coupling, as
    EMO's code computes it for a soft target), without MLE and without labels.
    """

    def __init__(self, target: str = "gold", frozen: bool = True, temperature: float = 1.0) -> None:
        super().__init__()
        self.target = check_choice("target", target, ("gold", "teacher"))
        if self.target == "teacher":  # the extension reads no labels
            self.reads = LabelTerm.reads & ~Reads.LABELS
        self.frozen = bool(frozen)
        self.temperature = check_range("temperature", temperature, 0.0, low_open=True)
        self._source: Optional[Tensor] = None  # live embeddings (frozen=False)
        self.register_buffer("frozen_embeddings", None)

    def bind(self, teacher: torch.nn.Module, student: torch.nn.Module, stacks: Sequence[str] = ()) -> None:
        self.set_embeddings(class_embeddings(student))

    def set_embeddings(self, weight: Tensor) -> None:
        if self.frozen:
            self.frozen_embeddings = weight.detach().clone()
        else:
            self._source = weight

    def embeddings(self) -> Tensor:
        """``E`` with unit rows, detached ``[C, H]``."""
        weight = self.frozen_embeddings if self.frozen else self._source
        if weight is None:
            raise ValueError("demd: no embeddings; the objective binds them from the student")
        return F.normalize(compute_dtype(weight.detach()), dim=-1)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, mask: Optional[Tensor] = None,
                labels: Optional[Tensor] = None) -> Tensor:
        check_class_inputs("demd", student_logits, teacher_logits, labels, Reads.LABELS in self.reads)
        self.check_mask(mask, student_logits)
        E = self.embeddings()
        if E.shape[0] != student_logits.shape[-1]:
            raise ValueError(f"demd: {E.shape[0]} embedding rows for {student_logits.shape[-1]} classes")
        with no_autocast(student_logits):
            s = compute_dtype(student_logits)
            q = torch.softmax(s, -1)
            q_repr = q @ E.to(s.dtype)  # [B, H]
            if self.target == "teacher":
                p = torch.softmax(compute_dtype(teacher_logits.detach()) / self.temperature, -1)
                return row_mean(1.0 - ((p @ E.to(s.dtype)) * q_repr).sum(-1), mask)
            emd = 1.0 - (E.to(s.dtype)[labels] * q_repr).sum(-1)  # [B]
            mle = F.cross_entropy(s, labels, reduction="none")
            ratio = (mle / emd.clamp_min(1e-12)).detach()
            return row_mean(0.5 * (mle + ratio * emd), mask)

    def extra_repr(self) -> str:
        return f"target={self.target!r}, frozen={self.frozen}"

