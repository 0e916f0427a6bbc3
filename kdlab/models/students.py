"""Student builders: from pretrained weights, from a subset of the teacher's layers
(DistilBERT-style), or from a shrunken copy of the teacher's config with random init."""

from __future__ import annotations

import copy
from typing import Any, List

import torch

from kdlab.config import StudentConfig
from kdlab.errors import ConfigError
from kdlab.families.base import Family
from kdlab.models import STUDENTS, Loaded, carry_tokenizer_size
from kdlab.models.byte_tokenizer import byte_tokenizer

# Config attributes that hold the number of transformer blocks, by architecture family.
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def layer_count(config) -> int:
    for key in LAYER_COUNT_KEYS:
        if hasattr(config, key):
            return int(getattr(config, key))
    raise ConfigError(f"cannot tell the number of layers of a {config.model_type} model")


def take_layers(model: torch.nn.Module, layers: List[int]) -> torch.nn.Module:
    """A copy of ``model`` keeping only the transformer blocks at ``layers``.

    Every ``ModuleList`` whose length is the model's layer count is treated as the block
    stack (BERT ``encoder.layer``, GPT-2 ``h``, LLaMA ``layers``, T5 ``block``), so the
    same code serves every family. Embeddings, pooler and head are copied as they are.
    """
    n = layer_count(model.config)
    bad = [i for i in layers if not -n <= i < n]
    if not layers or bad:
        raise ConfigError(
            f"student.layers={list(layers)}: indices must be in [0, {n - 1}] for a {n}-layer "
            "teacher (e.g. student.layers=[0,5])"
        )
    if len(set(i % n for i in layers)) != len(layers):
        raise ConfigError(f"student.layers={list(layers)} repeats a layer")
    student = copy.deepcopy(model)
    stacks = [
        (name, mod)
        for name, mod in student.named_modules()
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n
    ]
    # outermost only: a T5 block's own ModuleList of sub-layers may have length n too
    stacks = [(name, mod) for name, mod in stacks if not any(name.startswith(f"{o}.") for o, _ in stacks)]
    if not stacks:
        raise ConfigError(f"found no stack of {n} layers in the {model.config.model_type} teacher")
    for name, stack in stacks:
        parent = student.get_submodule(name.rsplit(".", 1)[0]) if "." in name else student
        kept = [stack[i] for i in layers]
        _keep_relative_bias(stack, kept)
        setattr(parent, name.rsplit(".", 1)[-1], torch.nn.ModuleList(kept))
    for key in LAYER_COUNT_KEYS + ("num_decoder_layers",):  # T5 counts its decoder apart
        if hasattr(student.config, key) and getattr(student.config, key) is not None:
            setattr(student.config, key, len(layers))
    return student


def _keep_relative_bias(stack: torch.nn.ModuleList, kept: List[torch.nn.Module]) -> None:
    """T5 stores its relative position bias in block 0 only: a new first block gets it."""
    attn = getattr(getattr(stack[0], "layer", [None])[0], "SelfAttention", None)
    if attn is None or not getattr(attn, "has_relative_attention_bias", False) or kept[0] is stack[0]:
        return
    first = kept[0].layer[0].SelfAttention
    first.has_relative_attention_bias = True
    first.relative_attention_bias = attn.relative_attention_bias


@STUDENTS.register("from_teacher")
def from_teacher(cfg: StudentConfig, teacher: Loaded, num_labels: int, family: Family) -> Loaded:
    """Keep ``student.layers`` of the (fine-tuned) teacher: embeddings, head and the chosen
    blocks start from the teacher's weights, as DistilBERT / PKD initialise students."""
    if cfg.layers is None:
        raise ConfigError("student=from_teacher needs student.layers=[...], e.g. [0,5]")
    model = take_layers(teacher.model, list(cfg.layers))
    return Loaded(carry_tokenizer_size(model, len(teacher.tokenizer)), teacher.tokenizer,
                  f"{teacher.source}:layers={list(cfg.layers)}")


STUDENT_TOKENIZERS = ("teacher", "bytes")
VOCAB_MULTIPLE = 64


def _own_tokenizer(config: Any, tokenizer: Any) -> None:
    """Size ``config``'s vocabulary (padded to a multiple of 64) and special ids for ``tokenizer``."""
    config.vocab_size = -(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    special = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id, "decoder_start_token_id": tokenizer.pad_token_id}
    for k, v in special.items():
        if hasattr(config, k):
            setattr(config, k, v)


@STUDENTS.register("shrunk")
def shrunk(cfg: StudentConfig, teacher: Loaded, num_labels: int, family: Family) -> Loaded:
    """The teacher's architecture with ``student.overrides`` applied, randomly initialised;
    with ``student.tokenizer=bytes``, sized for a byte-level tokenizer of its own."""
    if cfg.tokenizer not in STUDENT_TOKENIZERS:
        raise ConfigError(f"student.tokenizer={cfg.tokenizer!r}: valid values are {', '.join(STUDENT_TOKENIZERS)}")
    config = copy.deepcopy(teacher.model.config)
    unknown = sorted(k for k in cfg.overrides if not hasattr(config, k))
    if unknown:
        raise ConfigError(
            f"student.overrides has key(s) {unknown} that a {config.model_type} config lacks"
        )
    for k, v in cfg.overrides.items():
        setattr(config, k, v)
    config.num_labels = num_labels
    tokenizer, source = teacher.tokenizer, f"shrunk:{dict(cfg.overrides)}"
    if cfg.tokenizer == "bytes":
        tokenizer, source = byte_tokenizer(), f"{source}:bytes"
        _own_tokenizer(config, tokenizer)
    try:
        model = family.from_config(config)
    except (ValueError, AssertionError) as e:
        raise ConfigError(f"student.overrides={dict(cfg.overrides)} give an invalid model: {e}") from None
    return Loaded(carry_tokenizer_size(model, len(tokenizer)), tokenizer, source, has_task_head=False)


@STUDENTS.register("pretrained")
def pretrained(cfg: StudentConfig, teacher: Loaded, num_labels: int, family: Family) -> Loaded:
    """A student checkpoint from ``student.path`` (local directory or hub id)."""
    if not cfg.path:
        raise ConfigError("student=pretrained needs student.path=<local dir or hub id>")
    return family.load(cfg.path, num_labels, key="student.path")
