"""Leaderboard files in the benchmarks' own formats, from official-format test files, and
what a run saves when ``trainer.save_student`` is off."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from kdlab import predict, products
from kdlab.config import DatasetConfig
from kdlab.data import get_task, load_split
from tests.families.famtools import make_pair


def lines_of(task: str, preds, exs) -> list:
    text = predict.render(get_task(task), preds, exs)
    if task.startswith("glue/"):
        return text.splitlines()
    return [json.loads(line) for line in text.splitlines()]


def test_every_leaderboard_test_split_has_its_file_name():
    from kdlab.data import TASKS

    names = set()
    for name in TASKS.names():
        spec = get_task(name)
        tests = [s for s in spec.splits if s.startswith("test")]
        assert all((name, s) in predict.FILES for s in tests), name
        names.update(predict.FILES[(name, s)] for s in tests)
    assert {"SST-2.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv", "STS-B.tsv", "BoolQ.jsonl", "AX-b.jsonl",
            "MultiRC.jsonl", "ReCoRD.jsonl"} <= names


def test_glue_files_use_ids_for_binary_tasks_and_names_for_nli(tmp_path):
    d = tmp_path / "glue"
    (d / "MNLI").mkdir(parents=True)
    (d / "MNLI" / "test_matched.tsv").write_text(
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
        "sentence2_parse\tsentence1\tsentence2\n"
        + "".join(f"{i}\t1\t1a\tfiction\t-\t-\t-\t-\tA man sleeps.\tA person rests {i}.\n" for i in range(3)))
    exs = load_split("glue/mnli", "test_matched", data_dir=str(tmp_path))
    assert lines_of("glue/mnli", [0, 1, 2], exs) == ["index\tprediction", "0\tentailment", "1\tneutral",
                                                      "2\tcontradiction"]
    assert lines_of("glue/cola", [1, 0, 1], exs)[1:] == ["0\t1", "1\t0", "2\t1"]
    assert lines_of("glue/stsb", [5.7, -0.2, 2.34567], exs)[1:] == ["0\t5.0", "1\t0.0", "2\t2.346"]


def test_superglue_files_use_the_benchmark_label_strings(tmp_path):
    d = tmp_path / "superglue" / "MultiRC"
    d.mkdir(parents=True)
    passage = {"text": "Some text.", "questions": [
        {"question": "Q0?", "idx": 0, "answers": [{"text": "a", "idx": 0}, {"text": "b", "idx": 1}]},
        {"question": "Q1?", "idx": 1, "answers": [{"text": "c", "idx": 2}]}]}
    (d / "test.jsonl").write_text(json.dumps({"idx": 7, "passage": passage}) + "\n")
    exs = load_split("superglue/multirc", "test", data_dir=str(tmp_path))
    assert lines_of("superglue/multirc", [1, 0, 1], exs) == [{"idx": 7, "passage": {"questions": [
        {"idx": 0, "answers": [{"idx": 0, "label": 1}, {"idx": 1, "label": 0}]},
        {"idx": 1, "answers": [{"idx": 2, "label": 1}]}]}}]
    flat = [SimpleNamespace(idx=i, choices=["Paris", "Rome"]) for i in (3, 4)]
    assert [r["label"] for r in lines_of("superglue/boolq", [1, 0], flat)] == ["true", "false"]
    assert [r["label"] for r in lines_of("superglue/wic", [0, 1], flat)] == ["false", "true"]
    assert [r["label"] for r in lines_of("superglue/wsc", [1, 0], flat)] == ["True", "False"]
    assert [r["label"] for r in lines_of("superglue/cb", [2, 1], flat)] == ["neutral", "contradiction"]
    assert [r["label"] for r in lines_of("superglue/axb", [1, 0], flat)] == ["not_entailment", "entailment"]
    assert lines_of("superglue/copa", [1, 0], flat) == [{"idx": 3, "label": 1}, {"idx": 4, "label": 0}]
    assert [r["label"] for r in lines_of("superglue/record", [1, 0], flat)] == ["Rome", "Paris"]


@pytest.mark.parametrize("save", [True, False])
def test_trainer_save_student_switches_the_saved_model_off(save, cache_dir, tmp_path):
    pair = make_pair("seq2seq", cache_dir)
    task = get_task("superglue/cb")
    cfg = OmegaConf.create({"output_dir": str(tmp_path), "seed": 0, "trainer": {
        "save_student": save, "eval_batch_size": 4, "batch_size": 2, "lr": 1e-3, "select": "last"},
        "dataset": OmegaConf.structured(DatasetConfig(name=task.name, max_length=32)),
        "teacher": {"name": "tiny", "path": None, "architecture": "t5", "finetune": {"max_train_samples": 8}},
        "student": {"name": "shrunk", "layers": None, "overrides": {"d_model": 64}, "tokenizer": "teacher"},
        "objective": {"alpha": 0.5, "ce_weight": None, "kd": {"temperature": 1.0, "t2": False, "anneal": False},
                      "terms": {}},
        "divergence": {"name": "kl", "weight": 1.0, "params": {}}, "online": {"method": "none"}})
    exp = SimpleNamespace(cfg=cfg, task=task, family=pair.family, device=torch.device("cpu"), precision="fp32")
    results = {"task": task.name, "metric": task.metric, "steps": 1,
               "teacher": {"name": "tiny", "params": 1, "dev": {"f1_macro": 0.5}},
               "student": {"name": "shrunk", "params": 1, "dev": {"f1_macro": 0.4}},
               "baseline_student": {"name": "shrunk", "params": 1, "dev": {"f1_macro": 0.3}}}
    students = {"baseline_student": make_pair("seq2seq", cache_dir).student, "student": pair.student}
    products.finish(exp, results, pair.teacher, students, {"validation": pair.dataset},
                    {"validation": pair.dataset}, {"train": 3, "validation": 3})
    assert (tmp_path / "student").is_dir() == save
    assert (tmp_path / "baseline_student").is_dir() == save
    if save:
        card = (tmp_path / "baseline_student" / "README.md").read_text()
        assert "baseline student (trained without a teacher)" in card and "| student, no distillation | 0.3000 |" in card
        assert json.loads((tmp_path / "baseline_student" / "kdlab_model.json").read_text())["dev"] == {"f1_macro": 0.3}
    assert set(results["savings"]) == {"student", "baseline_student"}
    fp = results["student"]["footprint"]
    assert fp["weights_measure"] == ("model.safetensors" if save else "tensor bytes")
    assert fp["batch_size"] == 3 and results["savings"]["student"]["params"] > 1
