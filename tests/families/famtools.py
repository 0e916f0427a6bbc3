"""Tiny offline teacher / student pairs of the token-level families, built as a run builds
them (``kdlab.assembly.Experiment`` on a composed config), and tiny batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List

import torch

from kdlab.assembly import Experiment
from kdlab.data import Example
from kdlab.families import Family
from kdlab.models import Loaded
from kdlab.tracking import NullTracker
from tests.conftest import compose_config

# family -> (task, the config's teacher and student options: a tiny random-init teacher and
# its architecture made narrower and shallower)
SETUPS = {
    "seq2seq": ("superglue/cb", ["teacher=tiny_t5", "student=shrunk_t5"]),
    "causal": ("superglue/copa", ["teacher=tiny_gpt2", "student=shrunk_gpt2"]),
}


def examples(task: str) -> List[Example]:
    """Three labelled examples of different lengths (so batches hold padding)."""
    if task == "superglue/cb":  # targets: entailment, contradiction, neutral (different lengths)
        pairs = [("It rained all day, so the match was called off.", "The match was cancelled.", 0),
                 ("She said nothing.", "She spoke at length about the weather.", 1),
                 ("He may come.", "He is here.", 2)]
        return [Example(a, b, y, i) for i, (a, b, y) in enumerate(pairs)]
    rows = [("The man broke his toe.", "cause", "He dropped a hammer on his foot.", "He got a hole in his sock.", 0),
            ("I tipped the bottle.", "effect", "The liquid in the bottle froze.", "The liquid poured out.", 1),
            ("The sun rose.", "effect", "It got light.", "The tide came in quickly over the sand.", 0)]
    return [Example(p, None, y, i, choices=[a, b], fields={"premise": p, "question": q})
            for i, (p, q, a, b, y) in enumerate(rows)]


@dataclass
class Pair:
    family: Family
    teacher: Loaded
    student: Loaded
    dataset: Any
    batch: Dict[str, torch.Tensor]


def build(name: str, cache_dir, *overrides: str) -> tuple[Experiment, Loaded, Loaded]:
    """The run of family ``name``'s setup (plus ``overrides``): its ``Experiment``, teacher as
    loaded (not fine-tuned) and student, both in eval mode (no dropout: values are compared
    exactly)."""
    task, models = SETUPS[name]
    cfg = compose_config([*models, f"dataset={task}", "divergence=none", f"cache_dir={cache_dir}", "logger=none",
                          *overrides])
    exp = Experiment(cfg, NullTracker(), torch.device("cpu"))
    teacher = exp.load_teacher()
    student = exp.build_student(teacher)
    teacher.model.eval()
    student.model.eval()
    return exp, teacher, student


def make_pair(name: str, cache_dir) -> Pair:
    exp, teacher, stu = build(name, cache_dir, "dataset.max_length=32")
    ds = exp.encode(teacher.tokenizer, examples(SETUPS[name][0]))
    return Pair(exp.family, teacher, stu, ds, ds.collate([ds[i] for i in range(len(ds))]))
