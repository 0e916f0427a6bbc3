"""The official metrics of GLUE and SuperGLUE, from scikit-learn and SciPy.

Scores are fractions in [0, 1] (correlations in [-1, 1]), not percentages. The
classification and correlation scores are ``sklearn.metrics`` / ``scipy.stats``, as the
benchmarks' own scorers use them; what no library has is here: the per-group scores of
MultiRC (exact match per question) and AX-g (gender parity per minimal pair), and
ReCoRD's answer-string scores with the official script's normalisation.

=========================  ==========================================================
task                       metrics (main first)
=========================  ==========================================================
CoLA, GLUE AX              matthews_correlation (multi-class: Gorodkin's R_K), accuracy
STS-B                      spearmanr, pearson
MRPC, QQP                  f1 (of the positive class), accuracy
CB                         f1_macro (unweighted mean over classes), accuracy
MultiRC                    f1a (F1 over all answer options), exact_match (per question)
ReCoRD                     f1, exact_match (token level, max over gold answers, SQuAD
                           normalisation: lower case, no punctuation, no a/an/the)
AX-b                       matthews_correlation, accuracy
AX-g                       accuracy, gender_parity (pairs with equal predictions)
the rest                   accuracy
=========================  ==========================================================

Degenerate inputs have a defined value, never NaN: F1 with no positive predicted or
present is 0; MCC with constant predictions or references is 0 (scikit-learn's
convention); Pearson and Spearman with a constant side (every prediction equal, e.g. a
collapsed regressor, or a single example) are 0, the same "no association measurable"
value, where SciPy would return NaN.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from kdlab.data.examples import NO_LABEL, Example
from kdlab.data.tasks import TaskSpec, get_task
from kdlab.errors import DataError

# ---------------------------------------------------------------- classification


def _constant(x: np.ndarray) -> bool:
    return bool(np.all(x == x[0]))


def accuracy(pred: np.ndarray, ref: np.ndarray) -> float:
    return float(skm.accuracy_score(ref, pred))


def binary_f1(pred: np.ndarray, ref: np.ndarray) -> float:
    """F1 of the positive class (label 1); 0 when there is nothing to find and nothing found."""
    return float(skm.f1_score(ref, pred, pos_label=1, average="binary", zero_division=0.0))


def macro_f1(pred: np.ndarray, ref: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes seen in ``pred`` or ``ref``."""
    return float(skm.f1_score(ref, pred, average="macro", zero_division=0.0))


def matthews_correlation(pred: np.ndarray, ref: np.ndarray) -> float:
    """MCC; for K classes Gorodkin's R_K. 0 when either side is constant."""
    if _constant(pred) and _constant(ref):
        return 0.0  # scikit-learn's value too, without its warning about a single label
    return float(skm.matthews_corrcoef(ref, pred))


# ---------------------------------------------------------------- regression


def pearson(pred: np.ndarray, ref: np.ndarray) -> float:
    """Pearson's r; 0 when either side is constant (SciPy: NaN and a warning)."""
    if _constant(pred) or _constant(ref):
        return 0.0
    return float(stats.pearsonr(pred, ref).statistic)


def spearman(pred: np.ndarray, ref: np.ndarray) -> float:
    """Spearman's rho (ties share their mean rank); 0 when either side is constant."""
    if _constant(pred) or _constant(ref):
        return 0.0
    return float(stats.spearmanr(pred, ref).statistic)


# ---------------------------------------------------------------- grouped tasks


def _by_group(groups: Sequence) -> List[np.ndarray]:
    index: Dict = {}
    for i, g in enumerate(groups):
        index.setdefault(g, []).append(i)
    return [np.asarray(v) for v in index.values()]


def group_exact_match(pred: np.ndarray, ref: np.ndarray, groups: Sequence) -> float:
    """Fraction of groups (MultiRC questions) whose every item is predicted correctly."""
    return float(np.mean([np.all(pred[g] == ref[g]) for g in _by_group(groups)]))


def group_agreement(pred: np.ndarray, groups: Sequence) -> float:
    """Fraction of groups (AX-g minimal pairs) whose predictions are all equal."""
    return float(np.mean([np.all(pred[g] == pred[g][0]) for g in _by_group(groups)]))


# ---------------------------------------------------------------- ReCoRD


def normalize_answer(s: str) -> str:
    """SQuAD / ReCoRD normalisation: lower case, strip punctuation, articles and extra spaces."""
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def token_f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def record_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> Dict[str, float]:
    f1 = [max(token_f1(p, g) for g in gs) for p, gs in zip(predictions, golds, strict=True)]
    em = [
        max(float(normalize_answer(p) == normalize_answer(g)) for g in gs)
        for p, gs in zip(predictions, golds, strict=True)
    ]
    return {"f1": float(np.mean(f1)), "exact_match": float(np.mean(em))}


# ---------------------------------------------------------------- per task

RECORD = "superglue/record"  # scored on answer strings, not label ids
Scorer = Callable[[np.ndarray, np.ndarray], float]
SCORERS: Dict[str, Scorer] = {
    "accuracy": accuracy,
    "f1": binary_f1,
    "f1_macro": macro_f1,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearmanr": spearman,
    "f1a": binary_f1,
}


def compute_metrics(
    task: str,
    predictions: Sequence,
    references: Sequence,
    groups: Optional[Sequence] = None,
) -> Dict[str, float]:
    """Every metric of ``task`` (``TaskSpec.metrics``) on one split.

    ``predictions`` / ``references``: class ids (regression: scores), one per example.
    ReCoRD: predicted answer strings and, per query, the list of gold answer strings.
    ``groups`` (MultiRC question ids, AX-g pair ids) is required for MultiRC; for AX-g,
    ``gender_parity`` is reported only when it is given. ``score`` builds all of these from
    ``Example`` lists.
    """
    spec = get_task(task)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if len(references) == 0:
        raise ValueError(f"no examples to score for {task}")
    if spec.name == RECORD:
        return record_scores(predictions, references)
    pred, ref = np.asarray(predictions), np.asarray(references)
    if pred.ndim != 1:
        raise ValueError(f"predictions must be one value per example, got shape {pred.shape}")
    if np.any(ref == NO_LABEL):
        raise DataError(f"{task}: references contain unlabelled examples (label {NO_LABEL})")
    if not spec.is_regression:
        pred, ref = pred.astype(int), ref.astype(int)
    else:
        pred, ref = pred.astype(float), ref.astype(float)
    if groups is not None and len(groups) != len(ref):
        raise ValueError(f"{len(groups)} groups for {len(ref)} references")
    out: Dict[str, float] = {}
    for name in spec.metrics:
        if name in SCORERS:
            out[name] = SCORERS[name](pred, ref)
        elif groups is None:
            # AX-g pair ids exist in the original files only, so parity is optional there.
            if name != "gender_parity":
                raise ValueError(
                    f"{task}: {name} needs the group of each example (groups=..., or use "
                    "kdlab.data.score(task, predictions, examples))"
                )
        elif name == "exact_match":
            out[name] = group_exact_match(pred, ref, groups)
        elif name == "gender_parity":
            out[name] = group_agreement(pred, groups)
    return out


def score(task: str, predictions: Sequence, examples: Sequence[Example]) -> Dict[str, float]:
    """``compute_metrics`` from examples: predictions are class ids, for multiple-choice
    tasks choice indices (ReCoRD: mapped to the chosen entity's text)."""
    spec: TaskSpec = get_task(task)
    if spec.name == RECORD:
        texts = [ex.choices[int(p)] for p, ex in zip(predictions, examples, strict=True)]
        return compute_metrics(task, texts, [ex.answers for ex in examples])
    groups = [ex.group for ex in examples]
    return compute_metrics(
        task, predictions, [ex.label for ex in examples], None if None in groups else groups
    )
