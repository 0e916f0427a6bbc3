"""DistilBERT's cosine loss and Patient KD on tiny BERT encoders: hand computations, layer
maps, the encoder family's hidden states and attentions, gradients, and the same-width
precondition."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from kdlab.errors import ConfigError
from kdlab.families import get_family
from kdlab.features import FEATURE_TERMS
from kdlab.methods.layers import pkd_pairs


def bert(layers: int, hidden: int = 16, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=40, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=32, num_labels=2, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg).double()


BATCH = dict(input_ids=torch.tensor([[2, 5, 7, 9, 0], [2, 8, 3, 0, 0]]),
             attention_mask=torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]))


STACKS = ("encoder",)


def outputs(teacher, student, kinds=("hidden_states",)):
    """Both models' ``Outputs`` from the encoder family asked for ``kinds``."""
    family = get_family("encoder").with_features(frozenset(kinds))
    with torch.no_grad():
        t_out = family.forward(teacher, BATCH)
    return family.forward(student, BATCH), t_out


def run(term, teacher, student):
    """Bind ``term`` to the encoder family's stack, run both models, return the term's
    value and both models' hidden states."""
    term.bind(teacher, student, STACKS)
    s_out, t_out = outputs(teacher, student)
    return term(s_out, t_out), s_out.hidden_states["encoder"], t_out.hidden_states["encoder"]


def test_pkd_layer_maps():
    assert pkd_pairs(12, 6, "skip") == [[2, 1], [4, 2], [6, 3], [8, 4], [10, 5]]  # authors' 1,3,5,7,9
    assert pkd_pairs(12, 6, "last") == [[7, 1], [8, 2], [9, 3], [10, 4], [11, 5]]  # authors' 6..10
    assert pkd_pairs(6, 3, "skip") == [[2, 1], [4, 2]]
    assert pkd_pairs(6, 3, "last") == [[4, 1], [5, 2]]


def test_distilbert_cosine_by_hand():
    teacher, student = bert(4), bert(2, seed=1)
    value, h_s, h_t = run(FEATURE_TERMS.build("distilbert_cos"), teacher, student)
    total, n = 0.0, 0
    for b in range(2):
        for i in range(5):
            if BATCH["attention_mask"][b, i]:
                s, t = h_s[-1][b, i].tolist(), h_t[-1][b, i].tolist()
                dot = sum(x * y for x, y in zip(s, t, strict=True))
                cos = dot / math.sqrt(sum(x * x for x in s) * sum(y * y for y in t))
                total, n = total + 1 - cos, n + 1
    assert value.item() == pytest.approx(total / n, rel=1e-6)  # the term computes in float32


@pytest.mark.parametrize("scheme", ["skip", "last"])
def test_pkd_by_hand(scheme):
    teacher, student = bert(6), bert(3, seed=1)
    term = FEATURE_TERMS.build("pkd", scheme=scheme)
    value, h_s, h_t = run(term, teacher, student)
    pairs = pkd_pairs(6, 3, scheme)
    assert term.pairs == pairs
    total, count = 0.0, 0
    for lt, ls in pairs:
        for b in range(2):
            s, t = h_s[ls][b, 0].tolist(), h_t[lt][b, 0].tolist()
            ns, nt = math.sqrt(sum(x * x for x in s)), math.sqrt(sum(x * x for x in t))
            total += sum((x / ns - y / nt) ** 2 for x, y in zip(s, t, strict=True))
            count += len(s)
    assert value.item() == pytest.approx(total / count, rel=1e-6)  # float32


@pytest.mark.parametrize("name", ["distilbert_cos", "pkd"])
def test_gradients_reach_the_student_not_the_teacher(name):
    teacher, student = bert(6), bert(3, seed=1)
    term = FEATURE_TERMS.build(name)
    term.bind(teacher, student, STACKS)
    family = get_family("encoder").with_features(frozenset({"hidden_states"}))
    t_out = family.forward(teacher, BATCH)  # with gradients enabled here: the term must detach
    term(family.forward(student, BATCH), t_out).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_padding_does_not_reach_the_value():
    teacher, student = bert(4), bert(2, seed=1)
    term = FEATURE_TERMS.build("distilbert_cos")
    a, _, _ = run(term, teacher, student)
    BATCH["input_ids"][0, 4] = 33  # a padded position's token
    try:
        b, _, _ = run(term, teacher, student)
    finally:
        BATCH["input_ids"][0, 4] = 0
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


@pytest.mark.parametrize("name", ["distilbert_cos", "pkd"])
def test_different_widths_without_projection_are_rejected(name):
    with pytest.raises(ConfigError, match="same hidden width"):
        FEATURE_TERMS.build(name).bind(bert(4, hidden=16), bert(2, hidden=8), STACKS)


def test_distilbert_projection_extension_learns_a_map():
    teacher, student = bert(4, hidden=16), bert(2, hidden=8)
    term = FEATURE_TERMS.build("distilbert_cos", projection=True)
    value, _, _ = run(term, teacher, student)
    value.backward()
    assert term.proj.weight.grad.abs().sum() > 0


def test_encoder_family_returns_hidden_states_and_attentions_when_asked():
    teacher, student = bert(4), bert(2, seed=1)
    s_out, t_out = outputs(teacher, student, kinds=("hidden_states", "attentions"))
    ref = teacher(**BATCH, output_hidden_states=True, output_attentions=True)
    assert len(t_out.hidden_states["encoder"]) == 5 and len(s_out.attentions["encoder"]) == 2
    for a, b in zip(t_out.hidden_states["encoder"], ref.hidden_states, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(t_out.feature_masks["encoder"], BATCH["attention_mask"].bool())
    family = get_family("encoder")
    plain = family.forward(teacher, BATCH)  # nothing asked: logits only
    assert plain.hidden_states is None and plain.attentions is None


@pytest.mark.parametrize("name, params", [("hidden", {"layers": [[4, 2], [0, 0]]}),
                                          ("attention", {"layers": [[3, 1]]})])
def test_generic_feature_terms_serve_the_encoder_family(name, params):
    """TinyBERT-style hidden-state and attention matching on BERT models of different widths."""
    teacher, student = bert(4, hidden=16), bert(2, hidden=8, seed=1)
    term = FEATURE_TERMS.build(name, **params)
    term.bind(teacher, student, STACKS)
    s_out, t_out = outputs(teacher, student, kinds=(term.kind,))
    value = term(s_out, t_out)
    assert torch.isfinite(value) and value > 0
    value.backward()
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
