"""Family facts live on the Family classes: what kdlab reads from a family instead of its name."""

from __future__ import annotations

import pytest
from transformers import BertConfig, GPT2Config, T5Config

from kdlab.evaluate import family_of
from kdlab.families import FAMILIES, get_family


def test_every_family_declares_its_capabilities():
    for name in FAMILIES.names():
        family = get_family(name)
        assert isinstance(family.class_logits, bool)
        assert family.auto_class_name.startswith("AutoModelFor") and family.pipeline_tag
    assert [n for n in FAMILIES.names() if get_family(n).class_logits] == ["encoder"]


@pytest.mark.parametrize("config, family", [
    (BertConfig(architectures=["BertForSequenceClassification"]), "encoder"),
    (T5Config(architectures=["T5ForConditionalGeneration"]), "seq2seq"),
    (GPT2Config(architectures=["GPT2ForCausalLM"]), "causal"),
])
def test_a_checkpoint_without_sidecar_is_told_by_its_family_s_architecture_suffix(config, family, tmp_path):
    config.save_pretrained(tmp_path)
    assert family_of(tmp_path, None) == family
