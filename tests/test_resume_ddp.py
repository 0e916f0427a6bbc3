"""A killed run resumes to the same result; DDP on CPU with gloo and two processes."""

import json
import socket
import subprocess
import sys
import time

from tests.conftest import REPO, run_cli

COMMON = ["experiment=smoke", "logger=none", "trainer.max_steps=24"]


def results(path):
    return json.loads((path / "results.json").read_text())


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


def test_ddp_cpu_two_processes(tmp_path, data_dir, cache_dir):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), "-m", "kdlab", "experiment=smoke", "hardware=ddp_cpu", "logger=none",
           "trainer.max_steps=6", f"cache_dir={cache_dir}", f"hydra.run.dir={tmp_path}"]
    env = {**__import__("os").environ, "KDLAB_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    res = results(tmp_path)
    assert res["meta"]["world_size"] == 2 and res["steps"] == 6
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    student = [r for r in rows if "student/loss" in r]
    assert [r["phase_step"] for r in student] == [2, 4, 6]  # rank 0 alone logs
