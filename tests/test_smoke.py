"""End to end: `kdlab experiment=smoke` on tiny slices of real SST-2."""

import json
import math

import pytest

from tests.conftest import run_cli

RESULT_KEYS = {"task", "metric", "teacher", "student", "divergence", "terms", "seed", "steps", "wall_seconds", "config"}


@pytest.fixture(scope="module")
def own_cache(tmp_path_factory):
    """A cache of its own: the first run must fine-tune whatever other tests cached."""
    return tmp_path_factory.mktemp("smoke-cache")


def smoke(tmp_path_factory, data_dir, cache_dir, name):
    run_dir = tmp_path_factory.mktemp(name)
    out = run_cli(["experiment=smoke", f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}"],
                  env_extra={"KDLAB_DATA_DIR": str(data_dir)})
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir, out


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, data_dir, own_cache):
    """The first smoke run fine-tunes the teacher into an empty cache (default suite)."""
    return [smoke(tmp_path_factory, data_dir, own_cache, "smoke0")]


@pytest.fixture(scope="module")
def second_smoke_run(smoke_runs, tmp_path_factory, data_dir, own_cache):
    """A second run with the same cache reuses the fine-tuned teacher."""
    return smoke(tmp_path_factory, data_dir, own_cache, "smoke1")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_results_json_contract(smoke_runs):
    run_dir, out = smoke_runs[0]
    res = json.loads((run_dir / "results.json").read_text())
    assert RESULT_KEYS <= set(res)
    assert res["task"] == "glue/sst2" and res["metric"] == "accuracy"
    assert res["divergence"] == "sinkhorn" and res["seed"] == 0 and res["steps"] == 24
    assert res["terms"] == ["kd", "sinkhorn"]  # the objective's weighted terms, as the run built it
    for who in ("teacher", "student"):
        assert {"name", "params", "dev"} <= set(res[who])
        assert 0.0 <= res[who]["dev"]["accuracy"] <= 1.0
        assert 0.0 <= res[who]["dev"]["ece"] <= 1.0  # calibration of every classifier
        bins = res[who]["reliability"]
        assert bins["bins"] == 15 and len(bins["count"]) == 15 and sum(bins["count"]) > 0
    assert res["teacher"]["params"] > res["student"]["params"] > 0
    assert res["config"]["trainer"]["max_steps"] == 24  # resolved config
    assert res["config"]["dataset"]["data_dir"]  # interpolation resolved
    assert 0 < res["wall_seconds"] < 600
    assert "student, distilled (kd + sinkhorn)" in out.stdout  # the printed table


def test_metrics_jsonl_logs_every_term(smoke_runs):
    run_dir, _ = smoke_runs[0]
    rows = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    phases = {r.get("phase") for r in rows}
    assert {"teacher_finetune", "student"} <= phases
    student = [r for r in rows if "student/loss" in r]
    assert [r["phase_step"] for r in student] == list(range(2, 25, 2))
    for r in student:
        for term in ("ce", "kd", "sinkhorn", "loss"):
            assert math.isfinite(r[f"student/{term}"])
        # the logged total is the weighted sum of the logged terms (alpha 0.9, beta 0.8)
        expected = 0.1 * r["student/ce"] + 0.9 * r["student/kd"] + 0.8 * r["student/sinkhorn"]
        assert r["student/loss"] == pytest.approx(expected, rel=1e-5)
    evals = [r for r in rows if "student/eval/accuracy" in r]
    assert [r["phase_step"] for r in evals] == [24]  # eval_strategy=end: the last checkpoint
    final = rows[-1]
    assert final["dev/student/accuracy"] == json.loads((run_dir / "results.json").read_text())["student"]["dev"]["accuracy"]


@pytest.mark.slow
def test_second_run_reuses_the_cached_teacher(smoke_runs, second_smoke_run, own_cache):
    cache_dir = own_cache
    (first, _), (second, _) = smoke_runs[0], second_smoke_run
    phases = {r.get("phase") for r in read_jsonl(second / "metrics.jsonl")}
    assert "teacher_finetune" not in phases
    assert len(list((cache_dir / "teachers").iterdir())) == 1
    # the teacher read back from the cache is the one fine-tuned in memory: same output key
    assert len(list((cache_dir / "teacher_outputs").glob("*.npy"))) == 1
    r1 = json.loads((first / "results.json").read_text())
    r2 = json.loads((second / "results.json").read_text())
    assert r1["teacher"]["dev"] == r2["teacher"]["dev"]  # the same teacher weights
    assert r1["student"]["dev"] == r2["student"]["dev"]  # same seed, same run


def test_wandb_offline_run_directory(smoke_runs):
    run_dir, _ = smoke_runs[0]
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(runs[0].glob("*.wandb"))
