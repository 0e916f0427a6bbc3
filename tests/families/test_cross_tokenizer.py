"""Teacher and student with different tokenizers: the byte-level student tokenizer, paired
tokenisations of the same examples, each model's logits over its own vocabulary, ULD
between them, and the pair check that allows it only where the objective can use it."""

from __future__ import annotations

import json

import pytest
import torch
from famtools import SETUPS, build, examples

from kdlab.batching import PairedDataset, teacher_batch
from kdlab.divergences import get as get_divergence
from kdlab.errors import ConfigError
from kdlab.families import get_family
from kdlab.models.byte_tokenizer import byte_tokenizer
from kdlab.objective import Objective, Term, build_objective
from kdlab.teacher_outputs import LiveTeacher
from kdlab.validation import check_pair
from tests.conftest import compose_config, refused_before_training, run_cli


def test_byte_tokenizer_round_trips_and_differs_from_wordpiece():
    tok = byte_tokenizer()
    assert len(tok) == 260
    text = "Café au lait, s'il vous plaît."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode("utf-8")) and tok.decode(ids) == text
    with_specials = tok("a", "b")["input_ids"]
    assert with_specials[0] == tok.bos_token_id and with_specials.count(tok.eos_token_id) == 2


@pytest.fixture(params=sorted(SETUPS))
def cross(request, cache_dir):
    """A tiny teacher (WordPiece) and a shrunk student with the byte-level tokenizer."""
    name = request.param
    exp, teacher, student = build(name, cache_dir, "student.tokenizer=bytes", "dataset.max_length=160")
    family = exp.family
    ex = examples(SETUPS[name][0])
    t_ds, s_ds = exp.encode(teacher.tokenizer, ex), exp.encode(student.tokenizer, ex)
    paired = PairedDataset(s_ds, t_ds)
    batch = paired.collate([paired[i] for i in range(len(paired))])
    return family, teacher, student, batch


def test_shrunk_student_with_bytes_has_its_own_vocabulary(cross):
    _, teacher, student, _ = cross
    assert student.model.config.vocab_size == 320 and len(student.tokenizer) == 260
    assert teacher.model.config.vocab_size == 30528
    assert student.model.get_input_embeddings().weight.shape[0] == 320


def test_each_model_reads_its_own_tokenisation_and_vocabulary(cross):
    family, teacher, student, batch = cross
    t_batch = teacher_batch(batch)
    assert set(t_batch) and not any(k.startswith("teacher.") for k in t_batch)
    assert t_batch["input_ids"].shape[1] < batch["input_ids"].shape[1]  # bytes are longer than WordPiece
    torch.testing.assert_close(t_batch["labels"], batch["labels"])
    torch.testing.assert_close(t_batch["index"], batch["index"])
    z_s = family.forward(student.model, batch)
    z_t = LiveTeacher(teacher.model, family, torch.device("cpu"), "fp32")(batch)
    assert z_s.logits.shape[-1] == 260 and z_t.logits.shape[-1] == 30522  # sliced per model
    # the teacher's outputs equal a forward on its own tokenisation
    torch.testing.assert_close(z_t.logits, family.forward(teacher.model, t_batch).logits)
    # answers: several bytes each, but one or a few WordPiece tokens
    assert (z_s.mask.sum(1) > z_t.mask.sum(1)).all()


def test_uld_between_different_tokenizers_trains_the_student(cross):
    family, teacher, student, batch = cross
    uld = get_divergence("uld")
    objective = Objective(1.0, [Term("uld", 1.5, uld)])
    out = family.forward(student.model, batch)
    t_out = LiveTeacher(teacher.model, family, torch.device("cpu"), "fp32")(batch)
    loss, parts = objective(out, family.supervised_loss(out, batch), t_out, labels=batch["labels"])
    assert torch.isfinite(loss) and parts["uld"] > 0
    expected = uld(out.logits, t_out.logits, mask=out.mask, teacher_mask=t_out.mask)
    torch.testing.assert_close(parts["uld"], expected)
    loss.backward()
    assert student.model.get_input_embeddings().weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.model.parameters())


def test_pair_check_allows_different_tokenizers_only_for_terms_that_can_use_them(cross):
    family, teacher, student, _ = cross
    uld_only = Objective(1.0, [Term("uld", 1.5, get_divergence("uld"))])
    check_pair(teacher, student, 2, family, uld_only.shared_tokenizer_terms(family))
    with_kd = Objective(0.5, [Term("kd", 0.5, get_divergence("kd")), Term("uld", 1.5, get_divergence("uld"))])
    with pytest.raises(ConfigError, match=r"different tokenizers.*objective term\(s\) kd need a shared tokenizer"
                                          r".*divergence=uld"):
        check_pair(teacher, student, 2, family, with_kd.shared_tokenizer_terms(family))


def test_encoder_class_logits_allow_different_tokenizers_but_feature_terms_do_not():
    kd = build_objective(compose_config(["experiment=smoke"]))
    assert kd.shared_tokenizer_terms(get_family("encoder")) == []
    cos = build_objective(compose_config(["experiment=methods/cpu/distilbert"]))
    assert cos.shared_tokenizer_terms(get_family("encoder")) == ["cos"]
    assert build_objective(compose_config(["experiment=smoke_causal"])).shared_tokenizer_terms(get_family("causal")) \
        == ["kd", "kl"]


def test_student_tokenizer_is_for_shrunk_students_only():
    from kdlab.validation import validate

    with pytest.raises(ConfigError, match="student.tokenizer='bytes' applies to student=shrunk only"):
        validate(compose_config(["experiment=smoke", "student.tokenizer=bytes"]))


@pytest.mark.slow
def test_uld_across_tokenizers_end_to_end(tmp_path, data_dir, cache_dir):
    """methods/cpu/uld: a WordPiece teacher, a byte-level student, COPA answers."""
    out = run_cli(["experiment=methods/cpu/uld", "trainer.max_steps=3", "trainer.log_every=1", "logger=none",
                   f"hydra.run.dir={tmp_path}", f"cache_dir={cache_dir}"],
                  env_extra={"KDLAB_DATA_DIR": str(data_dir)})
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["student"]["tokenizer"] == "bytes" and results["steps"] == 3
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    uld = [r["student/uld"] for r in rows if "student/uld" in r]
    assert len(uld) == 3 and all(v > 0 for v in uld)


def test_kd_across_tokenizers_fails_before_the_teacher_is_fine_tuned(tmp_path, data_dir):
    stderr = refused_before_training(["experiment=methods/cpu/uld", "objective.alpha=0.5"], tmp_path, data_dir)
    assert "objective term(s) kd need a shared tokenizer" in stderr
