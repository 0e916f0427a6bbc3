"""The models a run leaves: each student in Hugging Face format, with a model card.

``<run>/student/`` holds the distilled student (the checkpoint ``results.json`` reports:
the selected one under ``trainer.select=best``, whose weights the trainer loads back at
the end of its loop) and ``<run>/baseline_student/`` the student trained without a
teacher, when ``trainer.baseline_student=true``. Each directory holds ``config.json``
(with ``id2label`` / ``label2id`` from the task's label names), ``model.safetensors``, the
tokenizer files, a ``README.md`` model card and ``kdlab_model.json`` (the family, task and
input settings that ``kdlab-eval``, ``kdlab-predict`` and a chained run read).

Every family's student loads with plain transformers: ``AutoModelForSequenceClassification``
(encoder), ``AutoModelForSeq2SeqLM`` (seq2seq), ``AutoModelForCausalLM`` (causal), and
``AutoTokenizer`` (a byte-level student tokenizer is saved as ``tokenizer.json``). A
token-level model is saved with its embedding cut to its tokenizer's size: kdlab slices
the rows that pad the vocabulary to a multiple of 64 off the logits, so the saved model's
log-softmax equals the one kdlab ranked answers with.

A directory is written to a temp dir inside the run dir and renamed into place, so a
crash never leaves half a model.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

import kdlab
from kdlab.data import TaskSpec
from kdlab.data import prompts as prompt_templates
from kdlab.families import get_family
from kdlab.metadata import git_commit

SIDECAR = "kdlab_model.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"
# dataset settings that shape a model's inputs, or reproduce the run's dev scores
DATASET_KEYS = ("max_length", "truncation", "rank_scoring", "max_eval_samples", "stratified", "on_bad_row")
ROLES = {"student": "the distilled student", "baseline_student": "the student trained without a teacher",
         "online_teacher": "the teacher trained together with the student (online distillation)"}


def prepare(model: torch.nn.Module, tokenizer: Any, family: str, task: TaskSpec) -> None:
    """Make ``model`` what a plain transformers user needs: label names on a classifier,
    an embedding no larger than the tokenizer on a language model (see the module doc)."""
    if get_family(family).class_logits:
        config = model.config
        if task.is_regression:
            config.problem_type = "regression"
        else:
            config.problem_type = "single_label_classification"
            config.id2label = dict(enumerate(task.label_names))
            config.label2id = {name: i for i, name in enumerate(task.label_names)}
        return
    rows = model.get_input_embeddings().num_embeddings
    if rows > len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))


def sidecar(role: str, family: str, task: TaskSpec, cfg: Any, dev: Mapping[str, float]) -> Dict[str, Any]:
    """What kdlab reads back from a saved model: ``kdlab_model.json``."""
    out: Dict[str, Any] = {
        "role": role, "family": family, "auto_class": get_family(family).auto_class_name, "task": task.name,
        "label_names": list(task.label_names), "metric": task.metric,
        "dataset": {k: cfg.dataset[k] for k in DATASET_KEYS}, "seed": cfg.seed, "dev": dict(dev),
        "kdlab_version": kdlab.__version__, "git_commit": git_commit(),
    }
    if not get_family(family).class_logits:  # the token families score answers to a prompt
        tpl = prompt_templates.template(task.name, family)
        out["prompt"] = {"input": tpl.input, "targets": list(tpl.targets), "choice": tpl.choice}
    return out


def read_sidecar(path: Path) -> Optional[Dict[str, Any]]:
    f = Path(path) / SIDECAR
    return json.loads(f.read_text()) if f.is_file() else None


def save(path: Path, model: torch.nn.Module, tokenizer: Any, meta: Dict[str, Any], card: str) -> Path:
    """Write one model directory atomically (temp dir in the same parent, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the model from other users of the run dir
    old = path.parent / f".{path.name}-replaced"
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / SIDECAR).write_text(json.dumps(meta, indent=2, default=str))
        (tmp / CARD).write_text(card)
        if path.exists():  # a resumed run writes its model again: swap, then drop the old one
            shutil.rmtree(old, ignore_errors=True)
            os.rename(path, old)
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return path


def weights_bytes(path: Path) -> int:
    """Size on disk of a saved model's weights (every ``model*.safetensors`` shard)."""
    return sum(f.stat().st_size for f in Path(path).glob("model*.safetensors"))


def command_line() -> str:
    """The command that started this process, as a user would type it."""
    argv = sys.argv[1:]
    prog = "kdlab" if sys.argv and Path(sys.argv[0]).parent.name == "kdlab" else Path(sys.argv[0] or "python").name
    return " ".join([prog, *map(shlex.quote, argv)])


def save_students(out_dir: Path, cfg: Any, task: TaskSpec, family: str, students: Mapping[str, Any],
                  results: Dict[str, Any], data_sizes: Mapping[str, int]) -> Dict[str, Path]:
    """Save each trained student (``{role: Loaded}``) under ``out_dir/<role>/``; returns
    the directories. Call on rank 0 only, after ``results`` has every model's dev scores."""
    from kdlab.model_card import model_card

    saved: Dict[str, Path] = {}
    for role, loaded in students.items():
        prepare(loaded.model, loaded.tokenizer, family, task)
        meta = sidecar(role, family, task, cfg, results[role]["dev"])
        card = model_card(role, meta, cfg, results, data_sizes, command_line())
        saved[role] = save(Path(out_dir) / role, loaded.model, loaded.tokenizer, meta, card)
    return saved
