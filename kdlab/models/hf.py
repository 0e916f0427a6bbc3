"""Loading Hugging Face checkpoints from a local directory or the hub, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from kdlab.errors import ConfigError
from kdlab.models import Loaded, carry_tokenizer_size


def _where(path: str) -> str:
    return "local directory" if Path(path).is_dir() else "hub id"


def load_classifier(path: str, num_labels: int, key: str, reinit_head: bool = False) -> Loaded:
    """Load a sequence classifier with ``num_labels`` outputs from ``path``.

    ``path`` is a local directory or a hub id (hub loading honours ``HF_HUB_OFFLINE``).
    A checkpoint whose head has another number of labels is an incompatible teacher or
    student unless ``reinit_head`` is set, in which case a new head is initialised.
    """
    if path.startswith(("/", ".", "~")) and not Path(path).expanduser().is_dir():
        raise ConfigError(f"{key}={path!r}: no such directory (expected a local model dir or a hub id)")
    path = str(Path(path).expanduser()) if path.startswith("~") else path
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise ConfigError(
            f"{key}={path!r} could not be loaded as a {_where(path)}: {e.__class__.__name__}: "
            f"{str(e).splitlines()[0]}. Give a local model directory (the hub is only "
            "reachable with network access)."
        ) from None
    has_head = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    if has_head and config.num_labels != num_labels and not reinit_head:
        raise ConfigError(
            f"{key}={path!r} has a classification head with {config.num_labels} labels but the "
            f"task has {num_labels}: incompatible pair. Use a checkpoint trained on this task, "
            "or set teacher.force_finetune=true to train a new head."
        )
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=num_labels, ignore_mismatched_sizes=reinit_head
    )
    fresh_head = not has_head or (reinit_head and config.num_labels != num_labels)
    return Loaded(model=carry_tokenizer_size(model, len(tokenizer)), tokenizer=tokenizer, source=str(path),
                  has_task_head=not fresh_head)


def load_lm(path: str, auto_class: Any, key: str) -> Loaded:
    """Load a language model (``AutoModelForSeq2SeqLM`` / ``AutoModelForCausalLM``) and its
    tokenizer from a local directory or a hub id. The LM head is the task head: verbalised
    labels and answer choices are scored as text, so no new head is ever needed."""
    if path.startswith(("/", ".", "~")) and not Path(path).expanduser().is_dir():
        raise ConfigError(f"{key}={path!r}: no such directory (expected a local model dir or a hub id)")
    path = str(Path(path).expanduser()) if path.startswith("~") else path
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = auto_class.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{key}={path!r} could not be loaded as a {auto_class.__name__} from a {_where(path)}: "
            f"{e.__class__.__name__}: {str(e).splitlines()[0]}"
        ) from None
    return Loaded(model=carry_tokenizer_size(model, len(tokenizer)), tokenizer=tokenizer, source=str(path), has_task_head=True)
