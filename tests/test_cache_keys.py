"""Every cache key changes with each input that changes the cached object, and with
nothing else: the data enters as a digest of the loaded examples, so moving the data
directory keeps a key and editing one row changes it."""

from __future__ import annotations

import copy
import dataclasses
import shutil

import pytest
import torch
from omegaconf import OmegaConf

from kdlab import cache_keys
from kdlab.config import DatasetConfig, FinetuneConfig
from kdlab.data import load_split
from kdlab.data.examples import Example
from kdlab.models.byte_tokenizer import byte_tokenizer
from tests.methods.test_feature_methods import bert

HEADER = ["index", "sentence1", "sentence2", "label"]
ROWS = [[str(i), f"Premise number {i} says a thing.", f"Hypothesis {i}.",
         "entailment" if i % 3 else "not_entailment"] for i in range(12)]


def write_rte(root, rows=ROWS):
    path = root / "glue" / "RTE" / "train.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(r) + "\n" for r in [HEADER, *rows]), encoding="utf-8")
    return root


def rte(root, **kw):
    return load_split("glue/rte", "train", data_dir=str(root), **kw)


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def model():
    return bert(2).float()


@pytest.fixture
def examples(tmp_path):
    return rte(write_rte(tmp_path / "data"))


def data_cfg(**kw):
    return OmegaConf.structured(DatasetConfig(**{"name": "glue/rte", "data_dir": "/data", **kw}))


def edited(examples, i=3, **fields):
    out = [copy.deepcopy(ex) for ex in examples]
    out[i] = dataclasses.replace(out[i], **fields)
    return out


def other_config(model, **fields):
    twin = copy.deepcopy(model)
    for k, v in fields.items():
        setattr(twin.config, k, v)
    return twin


def other_tokenizer(tok, **attrs):
    twin = copy.deepcopy(tok)
    for k, v in attrs.items():
        setattr(twin, k, v)
    return twin


def changes_and_keeps(key, base, changed, kept):
    """``key(**base)`` differs under each of ``changed`` and equals it under each of ``kept``."""
    ref = key(**base)
    assert key(**base) == ref  # deterministic
    for name, change in changed:
        assert key(**{**base, **change}) != ref, f"{name} did not change the key"
    for name, change in kept:
        assert key(**{**base, **change}) == ref, f"{name} changed the key"


# -- the data ------------------------------------------------------------------------------
def test_the_examples_digest_follows_the_rows_not_the_directory(tmp_path):
    first = write_rte(tmp_path / "a")
    digest = cache_keys.examples_digest(rte(first))
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(first, moved)
    assert cache_keys.examples_digest(rte(moved)) == digest  # moved: same data, same key
    rows = [r.copy() for r in ROWS]
    rows[5][2] = "Hypothesis 5, edited."
    assert cache_keys.examples_digest(rte(write_rte(tmp_path / "c", rows))) != digest
    rows = [r.copy() for r in ROWS]
    rows[5][3] = "entailment" if rows[5][3] == "not_entailment" else "not_entailment"
    assert cache_keys.examples_digest(rte(write_rte(tmp_path / "d", rows))) != digest


def test_subsampling_and_the_bad_row_policy_count_through_the_rows_they_give(tmp_path):
    root = write_rte(tmp_path / "a")
    plain = rte(root, max_samples=6, seed=1)
    strat = rte(root, max_samples=6, seed=1, stratified=True)
    assert [e.idx for e in plain] != [e.idx for e in strat]  # the two draws differ here
    assert cache_keys.examples_digest(plain) != cache_keys.examples_digest(strat)
    assert cache_keys.examples_digest(rte(root, max_samples=6, seed=2)) != cache_keys.examples_digest(plain)
    # a malformed row skipped by on_bad_row=skip: the rows used are the clean file's
    dirty = write_rte(tmp_path / "b", [*ROWS[:4], ["99", "x", "y", "maybe"], *ROWS[4:]])
    assert cache_keys.examples_digest(rte(dirty, on_bad_row="skip")) == cache_keys.examples_digest(rte(root))


def test_the_examples_digest_reads_content_and_order_not_the_row_number(examples):
    digest = cache_keys.examples_digest(examples)
    for name, other in [("text_a", edited(examples, text_a="x")), ("text_b", edited(examples, text_b=None)),
                        ("label", edited(examples, label=1 - examples[3].label)),
                        ("choices", edited(examples, choices=["a"])), ("fields", edited(examples, fields={"w": 1})),
                        ("order", examples[::-1]), ("subset", examples[:-1])]:
        assert cache_keys.examples_digest(other) != digest, name
    assert cache_keys.examples_digest(edited(examples, idx=1000)) == digest


# -- the keys ------------------------------------------------------------------------------
def test_the_teacher_key_follows_each_input_of_the_fine_tuning(model, tok, examples):
    ft = OmegaConf.structured(FinetuneConfig(epochs=1, batch_size=16, max_train_samples=12))
    base = dict(model=model, tokenizer=tok, task="glue/rte", examples=examples, finetune=ft,
                dataset_cfg=data_cfg(), precision="fp32", world_size=1)
    recipe_changes = [(f"finetune.{k}", {"finetune": OmegaConf.merge(ft, {k: v})}) for k, v in
                      [("epochs", 2.0), ("max_steps", 5), ("batch_size", 8), ("lr", 1e-4), ("weight_decay", 0.01),
                       ("warmup_ratio", 0.1), ("max_grad_norm", 0.5), ("grad_accum", 2), ("seed", 1)]]
    changes_and_keeps(cache_keys.teacher, base, changed=[
        ("weights", {"model": bert(2, seed=1).float()}),
        ("architecture config", {"model": other_config(model, hidden_dropout_prob=0.1)}),
        ("tokenizer", {"tokenizer": other_tokenizer(tok, truncation_side="left")}),
        ("task", {"task": "glue/wnli"}),
        ("a row's text", {"examples": edited(examples, text_a="edited")}),
        ("a row's label", {"examples": edited(examples, label=1 - examples[3].label)}),
        ("the rows' order", {"examples": examples[::-1]}),
        ("dataset.max_length", {"dataset_cfg": data_cfg(max_length=64)}),
        ("dataset.truncation", {"dataset_cfg": data_cfg(truncation="only_second")}),
        *recipe_changes,
        ("precision", {"precision": "bf16"}),
        ("world size", {"world_size": 2}),
    ], kept=[
        ("finetune.save_every", {"finetune": OmegaConf.merge(ft, {"save_every": 7})}),
        ("finetune.max_train_samples (same rows)", {"finetune": OmegaConf.merge(ft, {"max_train_samples": 100})}),
        ("dataset.data_dir", {"dataset_cfg": data_cfg(data_dir="/moved")}),
        ("dataset.stratified (same rows)", {"dataset_cfg": data_cfg(stratified=True)}),
        ("dataset.on_bad_row (same rows)", {"dataset_cfg": data_cfg(on_bad_row="skip")}),
        ("dataset.max_eval_samples", {"dataset_cfg": data_cfg(max_eval_samples=3)}),
        ("dataset.rank_scoring", {"dataset_cfg": data_cfg(rank_scoring="mean")}),
        ("row numbers", {"examples": edited(examples, idx=1000)}),
        ("where the weights were read from", {"model": other_config(model, _name_or_path="/elsewhere")}),
        ("where the tokenizer was read from", {"tokenizer": other_tokenizer(tok, name_or_path="/elsewhere")}),
    ])
    assert cache_keys.teacher(**base).startswith("glue-rte-")


def test_the_teacher_output_key_follows_each_input_of_the_forward_pass(model, tok, examples):
    base = dict(model=model, tokenizer=tok, examples=examples, dataset_cfg=data_cfg(), precision="fp32")
    changes_and_keeps(cache_keys.teacher_outputs, base, changed=[
        ("weights", {"model": bert(2, seed=1).float()}),
        ("activation", {"model": other_config(model, hidden_act="relu")}),
        ("tokenizer", {"tokenizer": other_tokenizer(tok, truncation_side="left")}),
        ("a row's text", {"examples": edited(examples, text_b="edited")}),
        ("an extra example", {"examples": [*examples, Example("more", None, 0, 0)]}),
        ("the rows' order", {"examples": examples[::-1]}),
        ("dataset.max_length", {"dataset_cfg": data_cfg(max_length=64)}),
        ("dataset.truncation", {"dataset_cfg": data_cfg(truncation="only_first")}),
        ("precision", {"precision": "fp16"}),
    ], kept=[
        ("weights digest given", {"weights": cache_keys.weights_digest(model)}),
        ("dataset.data_dir", {"dataset_cfg": data_cfg(data_dir="/moved")}),
        ("dataset.stratified", {"dataset_cfg": data_cfg(stratified=True)}),
        ("dataset.on_bad_row", {"dataset_cfg": data_cfg(on_bad_row="skip")}),
        ("dataset.max_train_samples", {"dataset_cfg": data_cfg(max_train_samples=5)}),
        ("row numbers", {"examples": edited(examples, idx=1000)}),
    ])


def test_the_tokenised_key_follows_the_texts_and_the_encoding(tok, examples):
    base = dict(tokenizer=tok, examples=examples, max_length=32, truncation="longest_first")
    changes_and_keeps(cache_keys.tokenized, base, changed=[
        ("tokenizer", {"tokenizer": other_tokenizer(tok, truncation_side="left")}),
        ("text_a", {"examples": edited(examples, text_a="edited")}),
        ("text_b", {"examples": edited(examples, text_b=None)}),
        ("max_length", {"max_length": 16}),
        ("truncation", {"truncation": "only_second"}),
    ], kept=[
        ("a label", {"examples": edited(examples, label=1 - examples[3].label)}),
        ("row numbers", {"examples": edited(examples, idx=1000)}),
    ])


def test_the_ted_stage_one_key_follows_its_inputs(model):
    base = dict(who="teacher", model=model, task="glue/rte", data="d", layout={"layers": [1, 2], "init": "w"},
                stage_recipe={"epochs": 6, "seed": 42}, training={"weight_decay": 0.0, "precision": "fp32"})
    changes_and_keeps(cache_keys.ted_stage_one, base, changed=[
        ("who", {"who": "student"}), ("model", {"model": bert(2, seed=1).float()}), ("task", {"task": "glue/sst2"}),
        ("data", {"data": "e"}), ("layout", {"layout": {"layers": [2], "init": "w"}}),
        ("filter init", {"layout": {"layers": [1, 2], "init": "v"}}),
        ("recipe", {"stage_recipe": {"epochs": 6, "seed": 1}}),
        ("training", {"training": {"weight_decay": 0.1, "precision": "fp32"}}),
    ], kept=[("logging", {"training": {"weight_decay": 0.0, "precision": "fp32", "log_every": 5}})])


def test_the_dataset_digest_reads_token_ids_and_labels_not_positions():
    class Items:
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            ids, label = self.rows[i]
            return {"input_ids": ids, "labels": torch.tensor(label), "index": i}

    digest = cache_keys.dataset_digest(Items([([1, 2], 0), ([3], 1)]))
    assert cache_keys.dataset_digest(Items([([1, 2], 0), ([3], 1)])) == digest
    for rows in ([([1, 2], 0), ([4], 1)], [([1, 2], 0), ([3], 0)], [([3], 1), ([1, 2], 0)],
                 [([1], 0), ([2, 3], 1)]):
        assert cache_keys.dataset_digest(Items(rows)) != digest

    class Paired(Items):  # student and teacher tokenisations of each example
        def __getitem__(self, i):
            return super().__getitem__(i), {"input_ids": [7, i]}

    assert cache_keys.dataset_digest(Paired([([1, 2], 0)])) != cache_keys.dataset_digest(Items([([1, 2], 0)]))


# -- digests of models and tokenizers -------------------------------------------------------
def test_weights_digest_sees_one_changed_parameter():
    model = bert(2).float()
    h = cache_keys.weights_digest(model)
    assert cache_keys.weights_digest(bert(2).float()) == h
    with torch.no_grad():
        model.classifier.bias[0] += 1e-3
    assert cache_keys.weights_digest(model) != h


def test_a_model_and_tokenizer_read_back_from_disk_keep_their_digests(model, tok, tmp_path):
    """The teacher fine-tuned in this run and the one read from the teacher cache later give
    the same teacher-output key."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model2 = AutoModelForSequenceClassification.from_pretrained(tmp_path).float()
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    assert cache_keys.model_digest(model2) == cache_keys.model_digest(model)
    assert cache_keys.tokenizer_digest(tok2) == cache_keys.tokenizer_digest(tok)
