"""scripts/bench_gpu.py times the student step a run builds: its models, objective and loop
settings come from ``kdlab.assembly.Experiment`` on a composed config (tiny size here)."""

import argparse

import pytest
import torch

from tests.conftest import load_script

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_gpu")


@pytest.fixture
def args(cache_dir, monkeypatch):
    monkeypatch.setenv("KDLAB_CACHE_DIR", str(cache_dir))  # the embedded MiniLM tokenizer
    return argparse.Namespace(size="tiny", batch_size=8, max_length=16, steps=2, repeats=1)


def test_the_benchmarked_run_is_the_composed_one(bench, args):
    cfg = bench.compose_run(args, CPU, compile=False)
    assert (cfg.teacher.name, cfg.teacher.family, cfg.teacher.architecture) == ("tiny", "encoder", "bert")
    assert dict(cfg.student.overrides) == {"num_hidden_layers": 2}
    teacher, student = bench.build_models(args, CPU)
    assert not teacher.training and teacher.config.hidden_size == student.config.hidden_size == 64
    assert (teacher.config.num_hidden_layers, student.config.num_hidden_layers) == (2, 2)
    assert teacher.get_input_embeddings().weight.shape[0] == 1000  # the size's vocabulary, random weights
    exp = bench.Experiment(cfg, bench.NullTracker(), CPU)
    assert [(t.name, t.weight) for t in exp.objective.terms] == [("kd", 0.5)]


def test_every_row_runs_at_the_tiny_size(bench, args, capsys):
    rows = bench.run_rows(args, CPU, "fp32", compile=False)
    assert list(rows) == ["plain PyTorch loop (live teacher)", "kdlab trainer (live teacher)",
                          "kdlab trainer, cached teacher outputs (no teacher forward)"]
    assert all(len(rates) == 1 and rates[0] > 0 for rates in rows.values())
    assert "teacher tiny (0.1M)" in capsys.readouterr().out
