"""The keys of every on-disk cache, derived in one place from the inputs that determine
the cached object.

A key must change whenever the object would (or a run silently reuses a teacher trained on
other data) and stay put when it would not (or every run recomputes). So keys are built
from what the computation reads, not from how it was configured:

- the data is a digest of the loaded examples' content (``examples_digest``), never the
  directory, the subsampling or the bad-row policy that produced them: moving the data
  directory keeps every key, editing one row changes it;
- a model is a digest of its weights, class and architecture config (``model_digest``),
  never the path it was read from;
- a recipe keeps the fields that change the trained weights and drops the ones that do not
  (checkpoint cadence, logging; ``NOT_IN_KEY``).

The device is not part of any key: CPU and GPU differ by float rounding, not in kind.

Keys:

- ``teacher``: a fine-tuned teacher (``<cache_dir>/teachers/<key>/``).
- ``teacher_outputs``: the teacher's logits on a list of examples
  (``<cache_dir>/teacher_outputs/<key>.npy``); any examples, the task's or extra ones.
- ``token_teacher_outputs``: a token family's teacher, top-k per answer token
  (``<cache_dir>/teacher_outputs/<key>/``).
- ``tokenized``: token ids of examples' texts (``<cache_dir>/tokenized/<key>.npz``).
- ``ted_stage_one``: TED's stage-I filters (``<cache_dir>/ted_filters/<key>.pt``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from array import array
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from omegaconf import OmegaConf

# Loop and recipe fields that never change the trained weights.
NOT_IN_KEY = ("save_every", "keep_last", "log_every", "progress",
              "max_train_samples",  # the subsample is in the examples digest
              # a recipe without a dev set (teacher.finetune) does not read them
              "eval_strategy", "eval_every", "select", "patience")
# Example fields that hold its content; ``idx`` (its row number) is left out, as the
# object depends on what the rows say, not on where they sit in the file.
CONTENT = ("text_a", "text_b", "label", "group", "choices", "answers", "fields")
TEXTS = ("text_a", "text_b")
# Tokenizer attributes that change what a call returns (beyond its pipeline).
TOKENIZER_SETTINGS = ("padding_side", "truncation_side", "model_max_length", "clean_up_tokenization_spaces")
# Config entries that name where a model came from, not what it computes.
# ``architectures`` is written on save (the class is in the key anyway).
CONFIG_NOT_IN_KEY = ("_name_or_path", "transformers_version", "architectures")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr, separators=(",", ":"))


def _hash(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(parts).encode()).hexdigest()


def _container(node: Any) -> Dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


def _slug(task: str) -> str:
    return task.replace("/", "-")


# -- digests of the inputs ----------------------------------------------------------------
def examples_digest(examples: Sequence[Any], fields: Sequence[str] = CONTENT) -> str:
    """sha256 over the ``fields`` of every example, in order (the order is part of the data:
    cached rows are read by position)."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(_canonical([getattr(ex, f) for f in fields]).encode() + b"\n")
    return h.hexdigest()


def tokenizer_digest(tokenizer: Any) -> str:
    """A tokenizer by what it does: its pipeline (vocabulary, normaliser, pre-tokeniser,
    post-processor, added tokens), class, special tokens and sides. Not the path it was read
    from (the teacher's tokenizer in memory and the copy read back from the teacher cache
    are one tokenizer), nor the truncation and padding state each call leaves behind."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow tokenizer: its pickled state less its path
        from datasets.fingerprint import Hasher

        twin = copy.copy(tokenizer)
        twin.name_or_path = ""
        twin.init_kwargs = {k: v for k, v in getattr(twin, "init_kwargs", {}).items() if k != "name_or_path"}
        return Hasher.hash(twin)
    pipeline = json.loads(backend.to_str())
    pipeline.pop("truncation", None)  # set by every call from its own arguments
    pipeline.pop("padding", None)
    settings = {k: getattr(tokenizer, k, None) for k in TOKENIZER_SETTINGS}
    specials = {k: str(v) for k, v in getattr(tokenizer, "special_tokens_map", {}).items()}
    return _hash({"class": type(tokenizer).__name__, "pipeline": pipeline, "settings": settings,
                  "specials": specials})


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the model's parameters and buffers (names, shapes and bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_digest(model: torch.nn.Module, weights: Optional[str] = None) -> str:
    """The model as a function: its class, architecture config (activation, dropout, ...)
    and weights. ``weights``: a ``weights_digest`` of ``model`` already computed."""
    config = getattr(model, "config", None)
    arch = config.to_dict() if config is not None else {}
    arch = {k: v for k, v in arch.items() if k not in CONFIG_NOT_IN_KEY}
    return _hash({"class": type(model).__name__, "config": arch, "weights": weights or weights_digest(model)})


def _feed(h: Any, value: Any) -> None:
    """Add ``value`` to ``h`` unambiguously (a type tag and a length before each part)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode() + t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        keys = sorted(k for k in value if k != "index")  # a dataset's own row number is not data
        h.update(f"D{len(keys)}".encode())
        for k in keys:
            h.update(f"{k}\0".encode())
            _feed(h, value[k])
    elif isinstance(value, (list, tuple)):
        try:
            h.update(f"I{len(value)}".encode() + array("q", value).tobytes())  # token ids: fast path
        except (TypeError, OverflowError):
            h.update(f"L{len(value)}".encode())
            for v in value:
                _feed(h, v)
    else:
        h.update(f"V{value!r}\0".encode())


def dataset_digest(dataset: Any) -> str:
    """sha256 over every item of a tokenised dataset (token ids and labels; its own
    ``index`` left out), in order: the exact inputs of a model trained on it."""
    h = hashlib.sha256()
    for i in range(len(dataset)):
        _feed(h, dataset[i])
    return h.hexdigest()


def encoding(dataset_cfg: Any) -> Dict[str, Any]:
    """The ``dataset`` settings that change token ids (``rank_scoring`` only ranks answers
    at evaluation; the subsampling and row policy are in the examples digest)."""
    return {"max_length": int(dataset_cfg.max_length), "truncation": str(dataset_cfg.truncation)}


def recipe(node: Any) -> Dict[str, Any]:
    """A training recipe (``teacher.finetune``, TED's stage I) without ``NOT_IN_KEY``."""
    if OmegaConf.is_config(node):  # resolve only what is kept (log_every follows trainer.log_every)
        return {k: node[k] for k in node if k not in NOT_IN_KEY}
    return {k: v for k, v in dict(node).items() if k not in NOT_IN_KEY}


# -- the keys -----------------------------------------------------------------------------
def teacher(model: torch.nn.Module, tokenizer: Any, task: str, examples: Sequence[Any], finetune: Any,
            dataset_cfg: Any, precision: str, world_size: int) -> str:
    """A teacher fine-tuned from ``model`` (its state before training, the fresh task head
    drawn under the recipe's seed included) on ``examples`` of ``task`` with the
    ``finetune`` recipe. ``world_size``: each rank reads ``batch_size`` examples a step."""
    parts = {"kind": "teacher", "model": model_digest(model), "tokenizer": tokenizer_digest(tokenizer),
             "task": task, "examples": examples_digest(examples), "encoding": encoding(dataset_cfg),
             "recipe": recipe(finetune), "precision": precision, "world_size": int(world_size)}
    return f"{_slug(task)}-{_hash(parts)[:16]}"


def teacher_outputs(model: torch.nn.Module, tokenizer: Any, examples: Sequence[Any], dataset_cfg: Any,
                    precision: str, weights: Optional[str] = None) -> str:
    """The logits of a frozen ``model`` on ``examples`` (rows in their order), whichever task
    or source the examples come from. ``weights``: its ``weights_digest``, if computed."""
    parts = {"kind": "teacher_outputs", "model": model_digest(model, weights),
             "tokenizer": tokenizer_digest(tokenizer), "examples": examples_digest(examples),
             "encoding": encoding(dataset_cfg), "precision": precision}
    return _hash(parts)[:24]


def token_teacher_outputs(model: torch.nn.Module, tokenizer: Any, task: str, family: str, examples: Sequence[Any],
                          dataset_cfg: Any, precision: str, top_k: int, temperature: float, fmt: int,
                          weights: Optional[str] = None) -> str:
    """A top-k token-level cache (``kdlab.token_cache``) of a frozen ``model`` on
    ``examples``: its answer tokens come from the task's prompt template for ``family``,
    so both are in the key, with ``top_k``, the ``temperature`` the log-probabilities are
    stored at and the storage format ``fmt``."""
    parts = {"kind": "token_teacher_outputs", "model": model_digest(model, weights),
             "tokenizer": tokenizer_digest(tokenizer), "task": task, "family": family,
             "examples": examples_digest(examples), "encoding": encoding(dataset_cfg), "precision": precision,
             "top_k": int(top_k), "temperature": float(temperature), "format": int(fmt)}
    return f"{_slug(task)}-tok-{_hash(parts)[:20]}"


def tokenized(tokenizer: Any, examples: Sequence[Any], max_length: int, truncation: str) -> str:
    """Token ids of the examples' texts (the only fields tokenisation reads)."""
    parts = {"kind": "tokenized", "tokenizer": tokenizer_digest(tokenizer), "max_length": int(max_length),
             "truncation": truncation, "texts": examples_digest(examples, TEXTS)}
    return _hash(parts)[:32]


def ted_stage_one(who: str, model: torch.nn.Module, task: str, data: str, layout: Mapping[str, Any],
                  stage_recipe: Mapping[str, Any], training: Mapping[str, Any]) -> str:
    """TED's stage I for ``who`` ("teacher": its filters; "student": its task fine-tuning
    and filters), from ``model`` before stage I, the ``data`` digest (``dataset_digest``
    of the training set), the filter ``layout``, the stage recipe and ``training`` (the
    loop settings outside the recipe: weight decay, clipping, precision, world size)."""
    parts = {"kind": "ted_stage_one", "who": who, "model": model_digest(model), "task": task, "data": data,
             "layout": dict(layout), "recipe": recipe(stage_recipe), "training": recipe(training)}
    return f"{_slug(task)}-{who}-{_hash(parts)[:16]}"
