"""Small randomly initialised models built from code: T5, GPT-2 and LLaMA style language
models, and BERT-style encoders (classification heads; benchmarks at any size).

They need nothing from the network: the tokenizer is the MiniLM WordPiece tokenizer that
ships with kdlab (uncased, 30,522 tokens), with [PAD] as padding and decoder start,
[CLS] as BOS and [SEP] as EOS. A language model's embedding is padded to a multiple of 64
rows, as large models pad theirs; the families slice logits back to the tokenizer's size.
An encoder's embedding has exactly the tokenizer's rows, as MiniLM's has.
Weights are a function of (architecture, overrides): initialised under a fixed seed, so
the ``source`` string identifies them (it keys the fine-tuned-teacher cache).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    T5Config,
)

from kdlab.config import TeacherConfig
from kdlab.errors import ConfigError
from kdlab.families.base import Family
from kdlab.models import TEACHERS, Loaded, carry_tokenizer_size
from kdlab.models.minilm import minilm_path

VOCAB_MULTIPLE = 64
INIT_SEED = 0

# architecture -> (family, config class, default sizes)
ARCHITECTURES: Dict[str, Tuple[str, type, Dict[str, Any]]] = {
    "t5": ("seq2seq", T5Config, dict(d_model=128, d_ff=256, num_layers=2, num_decoder_layers=2,
                                     num_heads=4, d_kv=32)),
    "gpt2": ("causal", GPT2Config, dict(n_embd=128, n_layer=2, n_head=4, n_positions=512)),
    "llama": ("causal", LlamaConfig, dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=4,
                                          max_position_embeddings=512)),
    "bert": ("encoder", BertConfig, dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                         num_attention_heads=4, max_position_embeddings=512)),
}
DEFAULT = {"seq2seq": "t5", "causal": "gpt2", "encoder": "bert"}


def tiny_config(architecture: str, tokenizer: Any, overrides: Dict[str, Any],
                num_labels: int = 2) -> PretrainedConfig:
    """The config of a tiny ``architecture`` model sized for ``tokenizer`` (an encoder's
    head has ``num_labels`` outputs)."""
    family, cls, sizes = ARCHITECTURES[architecture]
    n = len(tokenizer)
    if family == "encoder":
        special = dict(vocab_size=n, pad_token_id=tokenizer.pad_token_id, num_labels=num_labels)
    else:
        special = dict(vocab_size=-(-n // VOCAB_MULTIPLE) * VOCAB_MULTIPLE, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                       decoder_start_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    config = cls(**{**special, **sizes})
    unknown = sorted(k for k in overrides if not hasattr(config, k))
    if unknown:
        raise ConfigError(f"teacher.overrides has key(s) {unknown} that a {config.model_type} config lacks")
    for k, v in overrides.items():
        setattr(config, k, v)
    return config


@TEACHERS.register("tiny")
def tiny(cfg: TeacherConfig, num_labels: int, cache_dir: str, family: Family) -> Loaded:
    """A tiny random-init T5 / GPT-2 / LLaMA / BERT (no task knowledge: fine-tuned on the
    task first)."""
    arch = cfg.architecture or DEFAULT.get(family.name)
    if arch is None:
        raise ConfigError(f"teacher=tiny builds {', '.join(DEFAULT)} models, not teacher.family={family.name!r}")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"teacher.architecture={arch!r}: valid values are {', '.join(ARCHITECTURES)}")
    if ARCHITECTURES[arch][0] != family.name:
        raise ConfigError(f"teacher.architecture={arch!r} is a {ARCHITECTURES[arch][0]} model but "
                          f"teacher.family={family.name!r}")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path(cache_dir))
    config = tiny_config(arch, tokenizer, dict(cfg.overrides), num_labels)
    with torch.random.fork_rng():
        torch.manual_seed(INIT_SEED)
        try:
            model = family.from_config(config)
        except (ValueError, AssertionError) as e:
            raise ConfigError(f"teacher.overrides={dict(cfg.overrides)} give an invalid model: {e}") from None
    source = f"tiny:{arch}:{sorted(dict(cfg.overrides).items())}"
    return Loaded(carry_tokenizer_size(model, len(tokenizer)), tokenizer, source, has_task_head=False)
