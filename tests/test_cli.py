"""The command line: help, --cfg, and one clear message (no traceback) for user errors."""

import json

import pytest

from tests.conftest import run_cli


def test_help_lists_every_group():
    out = run_cli(["--help"])
    assert out.returncode == 0, out.stderr
    for group in ("teacher", "student", "divergence", "dataset", "hardware", "trainer", "logger", "transfer",
                  "experiment"):
        assert f"{group}:" in out.stdout
    assert "sinkhorn" in out.stdout and "glue/sst2" in out.stdout


def test_cfg_job_prints_the_composed_config():
    out = run_cli(["--cfg", "job", "divergence=kl", "dataset=glue/rte"])
    assert out.returncode == 0, out.stderr
    assert "name: kl" in out.stdout and "name: glue/rte" in out.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["divergence=nope"], "nope"),
        (["trainer.lerning_rate=1"], "lerning_rate"),
        (["objective.alpha=1.5"], "objective.alpha=1.5"),
        (["divergence.params.epsilon=-1"], "epsilon"),
    ],
)
def test_user_errors_exit_nonzero_with_one_message(args, expected, tmp_path):
    out = run_cli([*args, f"hydra.run.dir={tmp_path}", "logger=none"])
    assert out.returncode != 0
    assert expected in out.stderr
    assert "Traceback" not in out.stderr


def test_failed_run_keeps_the_previous_results(tmp_path):
    """A later failing run in the same directory leaves results.json untouched."""
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"task": "glue/sst2", "marker": 1}))
    out = run_cli([f"hydra.run.dir={tmp_path}", "logger=none", f"dataset.data_dir={tmp_path / 'nowhere'}"])
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert json.loads(results.read_text()) == {"task": "glue/sst2", "marker": 1}


def test_a_failing_sweep_member_does_not_stop_the_sweep(tmp_path):
    out = run_cli(["-m", "objective.alpha=1.5,2.0", "logger=none", f"hydra.sweep.dir={tmp_path}"])
    assert out.returncode != 0
    assert (tmp_path / "0").is_dir() and (tmp_path / "1").is_dir()  # the second job ran too
    assert "objective.alpha=1.5: must be in [0, 1.0]" in out.stderr
