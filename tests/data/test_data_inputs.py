"""Model inputs: prompts for the generative families, rank classification, cached tokenisation."""

from __future__ import annotations

import numpy as np
import pytest
from data_samples import BENCHMARK_TASKS, SAMPLES

from kdlab.data import Example, load_split
from kdlab.data.encode import encode
from kdlab.data.prompts import DEFAULTS, choices, rank_classification, seq2seq, template
from kdlab.errors import ConfigError


@pytest.fixture
def sample_dir(tmp_path):
    for files in SAMPLES.values():
        for rel, text in files.items():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text(text, encoding="utf-8")
    return str(tmp_path)


def first_labelled(task, sample_dir):
    spec_splits = {"glue/ax": "validation", "superglue/axb": "test", "superglue/axg": "test"}
    return load_split(task, spec_splits.get(task, "train"), data_dir=sample_dir)[0]


@pytest.mark.parametrize("task", BENCHMARK_TASKS)
def test_every_template_renders(task, sample_dir):
    ex = first_labelled(task, sample_dir)
    assert set(DEFAULTS) == set(BENCHMARK_TASKS)
    source, target = seq2seq(task, ex, template(task, "seq2seq"))
    assert source and target and "{" not in source
    if "causal" in DEFAULTS[task]:
        prompt, conts = choices(task, ex, template(task, "causal"))
        assert prompt and len(conts) >= 2 and 0 <= ex.label < len(conts)


def test_formats_of_multi_part_tasks(sample_dir):
    copa = load_split("superglue/copa", "validation", data_dir=sample_dir)[0]
    prompt, conts = choices("superglue/copa", copa, template("superglue/copa", "causal"))
    assert prompt == "I slept because" and conts == [" i ran.", " i was tired."]
    assert seq2seq("superglue/copa", copa, template("superglue/copa", "seq2seq"))[1] == "choice2"
    record = first_labelled("superglue/record", sample_dir)
    prompt, conts = choices("superglue/record", record, template("superglue/record", "causal"))
    assert conts[record.label] == "Merkel is the German chancellor."
    assert (
        seq2seq("superglue/record", record, template("superglue/record", "seq2seq"))[1] == "Merkel"
    )
    stsb = first_labelled("glue/stsb", sample_dir)  # 4.2 -> nearest 0.2
    assert seq2seq("glue/stsb", stsb, template("glue/stsb", "seq2seq"))[1] == "4.2"


def test_templates_can_be_overridden():
    tpl = template(
        "glue/sst2", "causal", {"input": "Review: {text_a}\nSentiment:", "targets": ["bad", "good"]}
    )
    ex = Example("great", None, 1, 0)
    assert choices("glue/sst2", ex, tpl) == ("Review: great\nSentiment:", [" bad", " good"])
    with pytest.raises(ConfigError, match="2 labels but the template has 3"):
        template("glue/sst2", "causal", {"targets": ["a", "b", "c"]})
    with pytest.raises(ConfigError, match="valid keys"):
        template("glue/sst2", "causal", {"promt": "x"})
    with pytest.raises(ConfigError, match=r"uses \{sentence\}; available fields: text_a"):
        seq2seq("glue/sst2", ex, template("glue/sst2", "seq2seq", {"input": "{sentence}"}))
    with pytest.raises(ConfigError, match="no causal template"):
        template("glue/stsb", "causal")


def test_rank_classification_sum_and_length_normalised():
    logprobs = [[-4.0, -6.0], [-3.0, -1.0, -4.5]]  # ragged, like ReCoRD candidates
    lengths = [[1, 4], [3, 1, 9]]
    assert rank_classification(logprobs, lengths).tolist() == [0, 1]
    # per token: -4 vs -1.5, and -1, -1, -0.5: the longer continuations win
    assert rank_classification(logprobs, lengths, normalise=True).tolist() == [1, 2]


@pytest.fixture
def tokenizer(tmp_path):
    from transformers import BertTokenizerFast

    words = "the a cat dog sat on mat ran far big".split()
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return BertTokenizerFast(vocab=str(vocab))


def test_encode_truncation_strategies(tokenizer):
    ex = [Example("the cat sat on the mat", "a dog ran", 0, 0)]
    longest = encode(ex, tokenizer, max_length=7)["input_ids"][0]
    only_first = encode(ex, tokenizer, max_length=7, truncation="only_first")["input_ids"][0]
    # 6 + 3 tokens + [CLS] [SEP] [SEP] into 7: longest_first trims the longer text down to
    # the shorter's length, then both in turn; only_first trims the first text alone
    assert tokenizer.decode(longest) == "[CLS] the cat [SEP] a dog [SEP]"
    assert tokenizer.decode(only_first) == "[CLS] the [SEP] a dog ran [SEP]"
    only_second = encode(
        [Example("a dog ran", "the cat sat on the mat", 0, 0)], tokenizer, 8, "only_second"
    )
    assert tokenizer.decode(only_second["input_ids"][0]) == "[CLS] a dog ran [SEP] the cat [SEP]"
    with pytest.raises(ConfigError, match="valid strategies"):
        encode(ex, tokenizer, 8, truncation="middle")


def test_encode_cache_skips_retokenising(tokenizer, tmp_path, monkeypatch):
    examples = [Example(f"the cat sat {w}", None, 0, i) for i, w in enumerate(["on", "far", "big"])]
    first = encode(examples, tokenizer, 16, cache_dir=str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(type(tokenizer), "__call__", boom)
    assert encode(examples, tokenizer, 16, cache_dir=str(tmp_path / "cache")) == first
    with pytest.raises(AssertionError, match="tokenised again"):  # another max_length: a new entry
        encode(examples, tokenizer, 8, cache_dir=str(tmp_path / "cache"))
    monkeypatch.undo()
    assert np.array_equal(first["input_ids"][1], tokenizer("the cat sat far")["input_ids"])
