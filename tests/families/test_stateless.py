"""A family holds no state: one instance serves any number of models (teacher, student,
several teachers, several runs), each model carrying its own tokenizer's size."""

from __future__ import annotations

import copy
import itertools
from typing import Any, Dict, List, Tuple

import pytest
import torch
from famtools import SETUPS, build, examples
from omegaconf import OmegaConf
from transformers import AutoTokenizer, BertConfig

from kdlab.batching import loader
from kdlab.config import DatasetConfig
from kdlab.data import get_task
from kdlab.families import FAMILIES, Family, get_family
from kdlab.models import Loaded, tokenizer_size
from kdlab.models.minilm import minilm_path


def token_models(name: str, cache_dir) -> Tuple[Loaded, Loaded]:
    """A tiny teacher (WordPiece, 30,522 tokens in 30,528 rows) and a shrunk student with
    the byte-level tokenizer (260 tokens in 320 rows), as a run builds them."""
    _, teacher, student = build(name, cache_dir, "student.tokenizer=bytes")
    return teacher, student


def encode(family: Family, loaded: Loaded, name: str) -> Dict[str, torch.Tensor]:
    task = SETUPS[name][0]
    ds = family.dataset(loaded.tokenizer, examples(task), get_task(task),
                        OmegaConf.structured(DatasetConfig(name=task, max_length=160)))
    return ds.collate([ds[i] for i in range(len(ds))])


def valid_orders() -> List[Tuple[str, ...]]:
    """Every order of the four calls in which a model's data is encoded before its forward."""
    steps = ("data:teacher", "data:student", "forward:teacher", "forward:student")
    return [p for p in itertools.permutations(steps)
            if p.index("data:teacher") < p.index("forward:teacher")
            and p.index("data:student") < p.index("forward:student")]


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_one_family_instance_slices_each_model_to_its_own_tokenizer_in_any_order(name, cache_dir):
    teacher, student = token_models(name, cache_dir)
    models = {"teacher": teacher, "student": student}
    assert {k: tokenizer_size(m.model) for k, m in models.items()} == {"teacher": 30522, "student": 260}
    reference = {}  # each model's logits from a family instance of its own
    for role, m in models.items():
        fresh = get_family(name)
        with torch.no_grad():
            reference[role] = fresh.forward(m.model, encode(fresh, m, name)).logits
        assert reference[role].shape[-1] == len(m.tokenizer)
    family = get_family(name)
    for order in valid_orders():
        batches: Dict[str, Any] = {}
        with torch.no_grad():
            for step in order:
                kind, role = step.split(":")
                if kind == "data":
                    batches[role] = encode(family, models[role], name)
                else:
                    out = family.forward(models[role].model, batches[role]).logits
                    assert out.shape[-1] == len(models[role].tokenizer), (order, step)
                    torch.testing.assert_close(out, reference[role])


def test_a_token_model_without_its_tokenizer_size_is_refused_clearly(cache_dir):
    family = get_family("causal")
    teacher, _ = token_models("causal", cache_dir)
    bare = family.from_config(teacher.model.config)  # built outside kdlab.models' builders
    batch = encode(family, teacher, "causal")
    with pytest.raises(TypeError, match="without its tokenizer's size.*carry_tokenizer_size"):
        family.forward(bare, batch)


def encoder_model(cache_dir) -> Loaded:
    tok = AutoTokenizer.from_pretrained(minilm_path(cache_dir))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=3)
    return Loaded(get_family("encoder").from_config(config).eval(), tok, "tiny-bert")


@pytest.mark.parametrize("name", sorted(FAMILIES.names()))
@pytest.mark.parametrize("features", [frozenset(), frozenset({"hidden_states", "attentions"})])
def test_a_family_s_attributes_never_change_while_it_serves_models(name, features, cache_dir):
    """Encoding, forwards, losses and predictions leave the family's ``__dict__`` as it
    was: nothing is learnt about one model that another model's call could read."""
    family = get_family(name).with_features(features)
    before = copy.deepcopy(vars(family))
    if name == "encoder":
        loaded = [encoder_model(cache_dir)]
        task = "superglue/cb"
    else:
        loaded = list(token_models(name, cache_dir))
        task = SETUPS[name][0]
    for m in loaded + loaded[::-1]:
        ds = family.dataset(m.tokenizer, examples(task), get_task(task),
                            OmegaConf.structured(DatasetConfig(name=task, max_length=160)))
        batch = ds.collate([ds[i] for i in range(len(ds))])
        assert vars(family) == before
        family.supervised_loss(family.forward(m.model, batch), batch)
        assert vars(family) == before
        family.predict(m.model, loader(ds, 2), torch.device("cpu"), "fp32")
        assert vars(family) == before
