"""Tiny offline teacher / student pairs of the token-level families, and tiny batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List

import torch
from omegaconf import OmegaConf

from kdlab.config import DatasetConfig, StudentConfig, TeacherConfig
from kdlab.data import Example, get_task
from kdlab.families import Family, get_family
from kdlab.models import STUDENTS, TEACHERS, Loaded

# family -> (task, student overrides: narrower and shallower than the teacher)
SETUPS = {
    "seq2seq": ("superglue/cb", {"num_layers": 1, "num_decoder_layers": 1, "d_model": 64, "d_ff": 128,
                              "num_heads": 2}),
    "causal": ("superglue/copa", {"n_layer": 1, "n_embd": 64, "n_head": 2}),
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


def make_pair(name: str, cache_dir, student: str = "shrunk") -> Pair:
    task, overrides = SETUPS[name]
    family = get_family(name)
    teacher = TEACHERS.get("tiny")(OmegaConf.structured(TeacherConfig(name="tiny", family=name)), 2,
                                   str(cache_dir), family)
    scfg = StudentConfig(name=student, overrides=overrides if student == "shrunk" else {},
                         layers=[1] if student == "from_teacher" else None)
    torch.manual_seed(0)
    stu = STUDENTS.get(student)(OmegaConf.structured(scfg), teacher, 2, family)
    teacher.model.eval()
    stu.model.eval()  # no dropout: values are compared exactly
    ds = family.dataset(teacher.tokenizer, examples(task), get_task(task),
                        OmegaConf.structured(DatasetConfig(name=task, max_length=32)))
    return Pair(family, teacher, stu, ds, ds.collate([ds[i] for i in range(len(ds))]))
