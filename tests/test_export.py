"""The students a run leaves: Hugging Face directories that load and score without kdlab,
with a model card; and the size / speed each student saves over the teacher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kdlab import evaluate, export, predict
from kdlab.config import StudentConfig, TeacherConfig
from kdlab.data import compute_metrics, get_task
from kdlab.families import get_family
from kdlab.families.tokens import slice_vocab
from kdlab.models import STUDENTS, TEACHERS
from tests.conftest import REPO, run_cli
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
    task_metrics = {k: v for k, v in res["student"]["dev"].items() if k != "ece"}  # ECE reads confidences
    assert compute_metrics("glue/sst2", preds, [ex.label for ex in examples]) == task_metrics


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
        assert fp["batch_size"] == 64 and fp["repeats"] == 3 and fp["device"] == "cpu"
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
    loaded = pair.family.load(str(tmp_path / "m"), task.num_labels, key="m").model.eval()  # as kdlab-eval loads it
    assert type(loaded) is type(model) and loaded.config.vocab_size == len(tok)
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


# -- reusing a saved student: kdlab-eval, kdlab-predict, a chained run ---------------------------


def run_module(module: str, args, data_dir) -> subprocess.CompletedProcess:
    env = {**os.environ, "KDLAB_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, cwd=REPO)


def test_kdlab_eval_of_a_run_prints_and_writes_its_dev_score(encoder_run, data_dir, tmp_path):
    run_dir, _ = encoder_run
    res = json.loads((run_dir / "results.json").read_text())
    out = run_module("kdlab.evaluate", [run_dir, "dataset=glue/sst2", "--out", tmp_path], data_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"accuracy {res['student']['dev']['accuracy']:.4f}" in out.stdout
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written["metrics"] == res["student"]["dev"]
    assert (written["task"], written["splits"], written["examples"]) == ("glue/sst2", ["validation"],
                                                                         {"validation": 64})


def test_kdlab_eval_on_another_task_reads_its_whole_split(encoder_run, data_dir, tmp_path, monkeypatch):
    run_dir, _ = encoder_run
    monkeypatch.setenv("KDLAB_DATA_DIR", str(data_dir))  # evaluate reads the data dir from the environment
    req = evaluate.parse([str(run_dir / "student"), "dataset=glue/rte", "split=validation"], "kdlab-eval")
    assert (req.dataset.max_eval_samples, req.dataset.max_length) == (None, 256)  # the RTE preset
    req.dataset.max_eval_samples = 16  # keep the test short
    result = evaluate.evaluate(req)
    assert result["examples"] == {"validation": 16} and 0 <= result["metrics"]["accuracy"] <= 1


@pytest.mark.parametrize("args, expected", [
    (["{tmp}"], "holds no model: no config.json there nor in"),
    (["{run}", "dataset=glue/mnli"], "has a classification head of 2 label(s) but glue/mnli has 3"),
    (["{run}", "split=dev"], "glue/sst2 has no split 'dev'. Valid splits: train, validation, test"),
    (["{run}", "split=test"], "split 'test' has no labels to score"),
    (["{run}", "dataset.max_length=long"], "dataset: Value 'long' of type 'str' could not be converted"),
    (["{run}", "lr=1"], "unknown key(s) ['lr']"),
])
def test_kdlab_eval_refuses_bad_input_in_one_line(args, expected, encoder_run, data_dir, tmp_path, capsys,
                                                  monkeypatch):
    run_dir, _ = encoder_run
    monkeypatch.setenv("KDLAB_DATA_DIR", str(data_dir))
    with pytest.raises(SystemExit) as exit_:
        evaluate.main([a.format(tmp=tmp_path, run=run_dir) for a in args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("kdlab: error: ") and expected in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (run_dir / "student" / "eval.json").exists()


def official_test_files(root: Path) -> None:
    """Unlabelled test files in the benchmarks' own formats (the shared data has none)."""
    (root / "glue" / "SST-2").mkdir(parents=True)
    (root / "glue" / "SST-2" / "test.tsv").write_text(
        "index\tsentence\n0\ta gorgeous , witty , seductive movie .\n1\tthe plot is nothing but boilerplate .\n"
        "2\tit 's a charming and often affecting journey .\n")
    (root / "superglue" / "BoolQ").mkdir(parents=True)
    rows = [{"question": "is the sky blue", "passage": "The sky is blue on a clear day.", "idx": 0},
            {"question": "do fish fly", "passage": "Fish swim in water.", "idx": 1}]
    (root / "superglue" / "BoolQ" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_kdlab_predict_writes_leaderboard_files(encoder_run, tmp_path):
    run_dir, _ = encoder_run
    official_test_files(tmp_path / "data")
    out = run_module("kdlab.predict", [run_dir, "dataset=glue/sst2", "--out", tmp_path / "sub"], tmp_path / "data")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = (tmp_path / "sub" / "SST-2.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and [line.split("\t")[0] for line in lines[1:]] == ["0", "1", "2"]
    # the same predictions as the saved model loaded with transformers
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "student").eval()
    tok = AutoTokenizer.from_pretrained(run_dir / "student")
    texts = [line.split("\t")[1] for line in (tmp_path / "data/glue/SST-2/test.tsv").read_text().splitlines()[1:]]
    with torch.no_grad():
        expected = model(**tok(texts, padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
    assert [int(line.split("\t")[1]) for line in lines[1:]] == expected
    predict.main([str(run_dir), "dataset=superglue/boolq", f"dataset.data_dir={tmp_path / 'data'}",
                  "--out", str(tmp_path / "sub")])
    rows = [json.loads(line) for line in (tmp_path / "sub" / "BoolQ.jsonl").read_text().splitlines()]
    assert [r["idx"] for r in rows] == [0, 1] and {r["label"] for r in rows} <= {"true", "false"}


def test_kdlab_predict_names_the_missing_test_file(encoder_run, tmp_path, capsys):
    run_dir, _ = encoder_run
    official_test_files(tmp_path / "data")
    with pytest.raises(SystemExit) as exit_:
        predict.main([str(run_dir), "dataset=glue/rte", f"dataset.data_dir={tmp_path / 'data'}",
                      "--out", str(tmp_path / "sub")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"expected {tmp_path / 'data' / 'glue' / 'RTE' / 'test.tsv'}" in err
    assert not (tmp_path / "sub").exists()


@pytest.mark.slow
def test_a_distilled_student_teaches_the_next_run(encoder_run, tmp_path, data_dir, cache_dir):
    """Teacher-assistant distillation: run 1's student is run 2's teacher (no fine-tuning:
    it has the task's head); run 2 selects its best checkpoint and saves that one."""
    run_dir, _ = encoder_run
    second = tmp_path / "second"
    shrunk_run("smoke", second, cache_dir, data_dir, "teacher=pretrained", f"teacher.path={run_dir}",
               "student.layers=[1]", "trainer.select=best", "trainer.eval_strategy=steps", "trainer.eval_every=1")
    res = json.loads((second / "results.json").read_text())
    first = json.loads((run_dir / "results.json").read_text())
    assert res["teacher"]["dev"] == first["student"]["dev"]  # the same model, scored again
    assert res["teacher"]["params"] == first["student"]["params"] > res["student"]["params"]
    phases = {json.loads(line).get("phase") for line in (second / "metrics.jsonl").read_text().splitlines()}
    assert "teacher_finetune" not in phases
    assert res["student"]["evaluations"] == 4
    result = evaluate.evaluate(evaluate.parse([str(second)], "kdlab-eval"))
    assert result["metrics"] == res["student"]["dev"]  # the selected checkpoint was saved
    assert "teacher: pretrained (" in (second / "student" / "README.md").read_text()
