"""Incompatible teacher / student pairs fail clearly; padded vocabularies are sliced;
hidden-state and attention terms."""

import copy
from typing import Tuple

import pytest
import torch
from famtools import SETUPS, Pair
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from kdlab.assembly import Experiment
from kdlab.errors import ConfigError
from kdlab.families import Family
from kdlab.features import FEATURE_TERMS
from kdlab.models import Loaded
from kdlab.objective import Objective, Term, build_objective
from kdlab.tracking import NullTracker
from kdlab.validation import check_pair
from tests.conftest import compose_config


def other_tokenizer() -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer trained on the fly: not the teacher's."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["the cat sat on the mat", "a dog ran"] * 10,
                            trainers.WordPieceTrainer(vocab_size=60, special_tokens=["[PAD]", "[UNK]", "[SEP]"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", sep_token="[SEP]")


def test_different_tokenizer_is_rejected(pair: Pair):
    student = Loaded(pair.student.model, other_tokenizer(), "other")
    with pytest.raises(ConfigError, match="different tokenizers.*need a shared tokenizer"):
        check_pair(pair.teacher, student, 2, pair.family)


def test_student_vocabulary_smaller_than_tokenizer_is_rejected(pair: Pair):
    model = copy.deepcopy(pair.student.model)
    model.config.vocab_size = 1000
    with pytest.raises(ConfigError, match="vocabulary of 1000 tokens, smaller than its tokenizer's 30522"):
        check_pair(pair.teacher, Loaded(model, pair.teacher.tokenizer, "small"), 2, pair.family)


def test_pretrained_student_checked_before_any_training(pair: Pair, tmp_path):
    """A student directory with another tokenizer fails when the runner checks the pair,
    right after loading the teacher and before fine-tuning it."""
    pair.student.model.save_pretrained(tmp_path)
    other_tokenizer().save_pretrained(tmp_path)
    teacher = {"causal": "tiny_gpt2", "seq2seq": "tiny_t5"}[pair.family.name]
    cfg = compose_config([f"teacher={teacher}", "student=pretrained", f"student.path={tmp_path}",
                          f"dataset={SETUPS[pair.family.name][0]}", "divergence=kl"])
    with pytest.raises(ConfigError, match="different tokenizers.*kd, kl need a shared tokenizer"):
        Experiment(cfg, NullTracker(), torch.device("cpu")).check_objective(pair.teacher)


def test_padded_vocabulary_is_sliced(pair: Pair):
    """The tiny models pad their vocabulary to a multiple of 64; logits have the tokenizer's size."""
    assert pair.teacher.model.config.vocab_size == 30528 > len(pair.teacher.tokenizer) == 30522
    out = pair.family.forward(pair.student.model, pair.batch)
    assert out.logits.shape[-1] == 30522
    model = copy.deepcopy(pair.student.model)
    model.resize_token_embeddings(30522)  # an unpadded student with the same tokenizer is compatible
    check_pair(pair.teacher, Loaded(model, pair.teacher.tokenizer, "unpadded"), 2, pair.family)


def features_objective(pair: Pair, loss: str) -> Tuple[Objective, Family]:
    hidden = FEATURE_TERMS.build("hidden", layers=[[2, 1], [0, 0]], loss=loss)
    attention = FEATURE_TERMS.build("attention", layers=[[1, 0]], loss=loss)
    obj = Objective(0.0, [Term("hid", 1.0, hidden), Term("att", 1.0, attention)])
    obj.bind(pair.teacher.model, pair.student.model, pair.family.stacks)
    return obj, pair.family.with_features(obj.features)


@pytest.mark.parametrize("loss", ["mse", "cosine"])
def test_feature_terms_train_the_projection(pair: Pair, loss):
    obj, family = features_objective(pair, loss)
    assert obj.features == {"hidden_states", "attentions"}
    assert [p.shape for p in obj.parameters()] == [torch.Size([128, 64]), torch.Size([128])] * 2  # 64 -> 128
    out = family.forward(pair.student.model, pair.batch)
    with torch.no_grad():
        teacher = family.forward(pair.teacher.model, pair.batch)
    loss_value, parts = obj(out, torch.zeros(()), teacher)
    assert parts["hid"] > 0 and parts["att"] > 0
    loss_value.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.parameters())


def test_feature_terms_vanish_between_identical_models(pair: Pair):
    twin = copy.deepcopy(pair.teacher.model)
    obj = Objective(0.0, [Term("hid", 1.0, FEATURE_TERMS.build("hidden", layers=[[2, 2], [0, 0]])),
                          Term("att", 1.0, FEATURE_TERMS.build("attention", layers=[[1, 1]], loss="cosine"))])
    obj.bind(pair.teacher.model, twin, pair.family.stacks)
    family = pair.family.with_features(obj.features)
    with torch.no_grad():
        _, parts = obj(family.forward(twin, pair.batch), torch.zeros(()), family.forward(pair.teacher.model, pair.batch))
    assert not list(obj.parameters())  # same width: no projection
    assert parts["hid"].item() < 1e-10 and parts["att"].item() < 1e-6


def test_feature_term_config_errors():
    term = "+objective.terms={hid: {name: hidden, weight: 1.0, params: {layers: [[2, 1]]}}}"
    hid = build_objective(compose_config([term])).terms[-1].module  # the default teacher is an encoder
    assert hid.resolve_stack(("encoder",)) == "encoder"
    with pytest.raises(ConfigError, match="stack='decoder': this family's stacks are encoder"):
        build_objective(compose_config([term.replace("[[2, 1]]}", "[[2, 1]], stack: decoder}")]))
    bad_stack = "+objective.terms={hid: {name: hidden, params: {layers: [[2, 1]], stack: middle}}}"
    with pytest.raises(ConfigError, match="stack='middle': this family's stacks are encoder, decoder"):
        build_objective(compose_config(["teacher=tiny_t5", bad_stack]))
    with pytest.raises(ConfigError, match="loss='l3'"):
        FEATURE_TERMS.build("hidden", layers=[[1, 1]], loss="l3")


def test_layer_out_of_range(pair: Pair):
    term = FEATURE_TERMS.build("hidden", layers=[[7, 1]])
    with pytest.raises(ConfigError, match=r"teacher layer\(s\) \[7\] out of range \[0, 2\]"):
        term.bind(pair.teacher.model, pair.student.model, pair.family.stacks)


@pytest.mark.parametrize("loss", ["mse", "cosine"])
@pytest.mark.parametrize("shape", [(3, 5, 8), (3, 5, 2, 5)])  # hidden states [B, L, D]; attentions [B, L, heads, L]
def test_feature_distance_masks_padding_as_selecting_the_tokens_would(loss, shape):
    """Padding is masked on the device, not selected (no host synchronisation): value and
    gradient equal those of the kept tokens alone, in float64; padding gets no gradient."""
    from kdlab.features import distance

    g = torch.Generator().manual_seed(0)
    s = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(*shape, generator=g, dtype=torch.float64)
    mask = torch.rand(shape[:2], generator=g) > 0.4
    masked = distance(s, t, loss, mask)
    (g_masked,) = torch.autograd.grad(masked, s)
    kept = s[mask].detach().requires_grad_(True)
    alone = distance(kept, t[mask], loss)
    (g_kept,) = torch.autograd.grad(alone, kept)
    torch.testing.assert_close(masked, alone, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_masked[mask], g_kept, rtol=1e-12, atol=1e-14)
    assert torch.equal(g_masked[~mask], torch.zeros_like(g_masked[~mask]))
