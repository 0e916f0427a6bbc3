"""A killed run resumes to the same result; DDP on CPU with gloo and two processes."""

import json
import socket
import subprocess
import sys
import time

import pytest
import torch

from kdlab.assembly import Experiment
from kdlab.tracking import NullTracker
from tests.conftest import REPO, compose_config, run_cli

COMMON = ["experiment=smoke", "logger=none", "trainer.max_steps=24"]


def results(path):
    return json.loads((path / "results.json").read_text())


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path, data_dir, cache_dir):
    args = [*COMMON, f"cache_dir={cache_dir}", "trainer.save_every=4"]
    env = {"KDLAB_DATA_DIR": str(data_dir)}
    straight = tmp_path / "straight"
    out = run_cli([*args, f"hydra.run.dir={straight}"], env_extra=env)
    assert out.returncode == 0, out.stderr[-2000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "kdlab", *args, f"hydra.run.dir={killed}"], cwd=REPO,
                            env={**__import__("os").environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    marker = killed / "checkpoints" / "student" / "step-00000008" / "meta.json"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert marker.exists() and not (killed / "results.json").exists(), "the run was not killed mid-way"

    resumed = tmp_path / "resumed"
    out = run_cli([*args, f"hydra.run.dir={resumed}", f"trainer.resume={killed}"], env_extra=env)
    assert out.returncode == 0, out.stderr[-2000:]
    a, b = results(straight), results(resumed)
    assert b["steps"] == a["steps"] == 24
    assert b["student"]["dev"] == a["student"]["dev"]
    last = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    first = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    final_loss = [[r["student/loss"] for r in rows if r.get("phase_step") == 24 and "student/loss" in r]
                  for rows in (first, last)]
    assert final_loss[0] == final_loss[1] and len(final_loss[0]) == 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_two(args, tmp_path, data_dir, cache_dir):
    """``kdlab hardware=ddp_cpu`` in two gloo processes; asserts it succeeded."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), "-m", "kdlab", *args, "hardware=ddp_cpu", "logger=none", f"cache_dir={cache_dir}",
           f"hydra.run.dir={tmp_path}"]
    env = {**__import__("os").environ, "KDLAB_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]


def test_ddp_cpu_two_processes(tmp_path, data_dir, cache_dir):
    torchrun_two(["experiment=smoke", "trainer.max_steps=6"], tmp_path, data_dir, cache_dir)
    res = results(tmp_path)
    assert res["meta"]["world_size"] == 2 and res["steps"] == 6
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    student = [r for r in rows if "student/loss" in r]
    assert [r["phase_step"] for r in student] == [2, 4, 6]  # rank 0 alone logs
    assert (tmp_path / "student" / "model.safetensors").is_file()  # rank 0 alone saves the student
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".student")] == []


class KilledAt(NullTracker):
    """A tracker that stops the process's work at a given step of a phase, like a kill."""

    def __init__(self, phase, step):
        super().__init__()
        self.phase, self.step = phase, step

    def log(self, row, *args, **kwargs):
        if row.get("phase") == self.phase and row.get("phase_step", 0) >= self.step:
            raise KeyboardInterrupt


def test_killed_teacher_fine_tuning_resumes_to_the_same_teacher(tmp_path, data_dir, cache_dir):
    """teacher.finetune.save_every: a run killed while fine-tuning the teacher resumes it."""
    def experiment(cache, tracker):
        cfg = compose_config(["experiment=smoke", f"cache_dir={cache}", f"dataset.data_dir={data_dir}",
                              "teacher.finetune.max_steps=6", "teacher.finetune.save_every=2",
                              "trainer.log_every=1", "trainer.progress=false"])
        return Experiment(cfg, tracker, torch.device("cpu"))

    def teacher(exp):  # as assemble() gets it: loaded, checked against the student, fine-tuned
        loaded = exp.load_teacher()
        exp.check_objective(loaded)
        return exp.fine_tuned(loaded)

    straight = teacher(experiment(tmp_path / "a", NullTracker())).model.state_dict()
    cache = tmp_path / "b"
    try:
        teacher(experiment(cache, KilledAt("teacher_finetune", 5)))
        raise AssertionError("the fine-tuning was not interrupted")
    except KeyboardInterrupt:
        pass
    partial = next((cache / "teachers").glob(".partial-*"))
    assert [p.name for p in sorted(partial.glob("step-*"))] == ["step-00000002", "step-00000004"]
    resumed = teacher(experiment(cache, NullTracker()))
    assert not partial.exists()  # removed once the teacher is cached
    assert all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in straight.items())


def _average_worker(rank, port, out_dir):
    import os

    import torch.distributed as dist

    from kdlab import distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        used, unused = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
        used.grad = torch.full((3,), float(rank + 1))  # rank 0: 1, rank 1: 2
        distributed.average_gradients([used, unused])
        torch.save({"used": used.grad, "unused": unused.grad}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gradients_of_objective_parameters_are_averaged_over_ranks(tmp_path):
    """Learned projections / filters live in the objective, outside DDP: the trainer averages
    their gradients itself (gloo, two processes)."""
    torch.multiprocessing.spawn(_average_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        grads = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(grads["used"], torch.full((3,), 1.5))
        assert grads["unused"] is None


@pytest.mark.slow
def test_ted_under_ddp(tmp_path, data_dir, cache_dir):
    """TED's stage I (DDP-wrapped filter probes) and stage II (filters outside DDP, their
    gradients averaged by the trainer) with two gloo processes."""
    torchrun_two(["experiment=methods/cpu/ted", "trainer.max_steps=4", "objective.terms.ted.params.stage1.max_steps=4"],
                 tmp_path, data_dir, cache_dir)
    res = results(tmp_path)
    assert res["meta"]["world_size"] == 2 and res["steps"] == 4
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in rows if "phase" in r} >= {"ted_teacher_filters", "ted_student_filters", "student"}
    assert all(r["student/ted"] > 0 for r in rows if "student/ted" in r)
