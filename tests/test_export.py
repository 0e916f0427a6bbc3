"""The students a run leaves: Hugging Face directories that load and score without kdlab,
with a model card; and the size / speed each student saves over the teacher."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kdlab import export
from kdlab.config import StudentConfig, TeacherConfig
from kdlab.data import compute_metrics, get_task
from kdlab.families import get_family
from kdlab.families.tokens import slice_vocab
from kdlab.models import STUDENTS, TEACHERS
from tests.conftest import run_cli
from tests.families.famtools import make_pair
from tests.plain_hf import score_without_kdlab

SHRINK = ["trainer.max_steps=4", "teacher.finetune.max_steps=4", "dataset.max_train_samples=64",
          "dataset.max_eval_samples=64", "logger=none"]


def shrunk_run(experiment: str, run_dir, cache_dir, data_dir, *extra: str):
    out = run_cli([f"experiment={experiment}", *SHRINK, f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}",
                   *extra], env_extra={"KDLAB_DATA_DIR": str(data_dir)})
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory, data_dir, cache_dir):
    run_dir = tmp_path_factory.mktemp("export-run")
    out = shrunk_run("smoke", run_dir, cache_dir, data_dir)
    return run_dir, out.stdout


def test_the_student_directory_is_a_complete_hf_model_with_a_card(encoder_run):
    run_dir, _ = encoder_run
    d = run_dir / "student"
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "README.md", "kdlab_model.json"} \
        <= {p.name for p in d.iterdir()}
    config = json.loads((d / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".student")]  # temp dir renamed away
    card = (d / "README.md").read_text()
    res = json.loads((run_dir / "results.json").read_text())
    for needle in ("glue/sst2", "teacher: minilm", "sinkhorn(", "train 64, validation 64",
                   f"{res['student']['dev']['accuracy']:.4f}", f"{res['teacher']['dev']['accuracy']:.4f}",
                   "majority class", "kdlab 0.1.0", "command: `kdlab experiment=smoke",
                   "AutoModelForSequenceClassification"):
        assert needle in card, needle
    meta = json.loads((d / "kdlab_model.json").read_text())
    assert (meta["family"], meta["task"], meta["dev"]) == ("encoder", "glue/sst2", res["student"]["dev"])


def test_the_student_loads_without_kdlab_and_reproduces_its_dev_score(encoder_run, data_dir, tmp_path):
    run_dir, _ = encoder_run
    preds, examples = score_without_kdlab(run_dir / "student", run_dir, data_dir, tmp_path)
    res = json.loads((run_dir / "results.json").read_text())
    assert len(preds) == 64
    assert compute_metrics("glue/sst2", preds, [ex.label for ex in examples]) == res["student"]["dev"]


def test_results_and_table_report_what_the_student_saves(encoder_run):
    run_dir, stdout = encoder_run
    res = json.loads((run_dir / "results.json").read_text())
    t, s = res["teacher"]["footprint"], res["student"]["footprint"]
    assert s["weights_measure"] == "model.safetensors"
    assert s["weights_bytes"] == (run_dir / "student" / "model.safetensors").stat().st_size
    assert t["weights_measure"] == "tensor bytes" and t["params"] == res["teacher"]["params"]
    # fp32 weights: 4 bytes a parameter (plus buffers); the safetensors header is small
    assert 4 * t["params"] <= t["weights_bytes"] < 4.1 * t["params"]
    assert 4 * s["params"] <= s["weights_bytes"] < 4.1 * s["params"]
    for fp in (t, s):
        assert fp["batch_size"] == 64 and fp["repeats"] == 5 and fp["device"] == "cpu"
        assert fp["throughput"] == pytest.approx(64 / (fp["latency_ms"] / 1e3), rel=1e-3)
    r = res["savings"]["student"]
    assert r["params"] == pytest.approx(t["params"] / s["params"], rel=1e-3) and r["params"] > 1
    assert r["size"] == pytest.approx(t["weights_bytes"] / s["weights_bytes"], rel=1e-3)
    assert r["latency"] == pytest.approx(t["latency_ms"] / s["latency_ms"], rel=1e-2)
    assert "size and speed" in stdout and f"{r['size']:.1f}x smaller weights" in stdout


def test_a_byte_level_student_tokenizer_is_saved_for_autotokenizer(cache_dir, tmp_path):
    """A tokenizer built from code (no files) comes back through AutoTokenizer unchanged."""
    family, task = get_family("encoder"), get_task("glue/rte")
    teacher = TEACHERS.get("minilm")(OmegaConf.structured(TeacherConfig(name="minilm")), 2, str(cache_dir), family)
    cfg = OmegaConf.structured(StudentConfig(name="shrunk", tokenizer="bytes", overrides={
        "num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}))
    student = STUDENTS.get("shrunk")(cfg, teacher, 2, family)
    export.prepare(student.model, student.tokenizer, "encoder", task)
    export.save(tmp_path / "student", student.model, student.tokenizer, {}, "old card")
    export.save(tmp_path / "student", student.model, student.tokenizer, {}, "card")  # a resumed run
    assert (tmp_path / "student" / "README.md").read_text() == "card"
    assert [p.name for p in tmp_path.iterdir()] == ["student"]  # no temp or replaced dir left
    tok = AutoTokenizer.from_pretrained(tmp_path / "student")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    texts = (["Ünïcode café", "plain words"], ["a second text", "and €"])
    assert tok(*texts)["input_ids"] == student.tokenizer(*texts)["input_ids"]
    batch = tok(*texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, student.model.eval()(**batch).logits, atol=1e-6)
    assert model.config.id2label == {0: "entailment", 1: "not_entailment"}


@pytest.mark.parametrize("name", ["seq2seq", "causal"])
def test_a_language_model_is_saved_without_its_vocabulary_padding(name, cache_dir, tmp_path):
    """kdlab slices padded vocabulary rows off the logits; the saved model has none, so its
    log-softmax is the one kdlab scores with."""
    pair = make_pair(name, cache_dir)
    model, tok = pair.student.model, pair.student.tokenizer
    assert model.config.vocab_size > len(tok)  # padded to a multiple of 64
    with torch.no_grad():
        before = pair.family.forward(model, pair.batch).logits
    task = get_task("superglue/cb" if name == "seq2seq" else "superglue/copa")
    export.prepare(model, tok, name, task)
    export.save(tmp_path / "m", model, tok, {}, "card")
    loaded = type(model).from_pretrained(tmp_path / "m").eval()
    assert loaded.config.vocab_size == len(tok)
    with torch.no_grad():
        after = pair.family.forward(loaded, pair.batch).logits
    assert after.shape[-1] == len(tok)
    mask = pair.batch["target_mask"]
    torch.testing.assert_close(F.log_softmax(after, -1)[mask],
                               F.log_softmax(slice_vocab(before, len(tok)), -1)[mask], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["smoke_seq2seq", "smoke_causal"])
def test_a_token_level_student_scores_without_kdlab_as_in_results(experiment, tmp_path, data_dir, cache_dir):
    run_dir = tmp_path / "run"
    shrunk_run(experiment, run_dir, cache_dir, data_dir)
    res = json.loads((run_dir / "results.json").read_text())
    preds, examples = score_without_kdlab(run_dir / "student", run_dir, data_dir, tmp_path)
    assert compute_metrics(res["task"], preds, [ex.label for ex in examples]) == res["student"]["dev"]
    assert "rank classification" in (run_dir / "student" / "README.md").read_text().lower()
