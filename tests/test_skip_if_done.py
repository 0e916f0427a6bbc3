"""trainer.skip_if_done: a job whose results.json is already in its output directory
returns it without training, so a sweep into a fixed directory resumes where it stopped;
results of another config there are refused and left as they were."""

import json

import pytest
from omegaconf import OmegaConf

from kdlab import runner
from kdlab.errors import ConfigError
from kdlab.tracking import RESULTS_FILE
from tests.conftest import compose_config


def _cfg(out_dir, *overrides):
    return compose_config(["experiment=smoke", "logger=none", "trainer.skip_if_done=true",
                           f"output_dir={out_dir}", *overrides])


def _write(out_dir, cfg) -> str:
    text = json.dumps({"task": "glue/sst2", "marker": 7, "config": OmegaConf.to_container(cfg, resolve=True)})
    (out_dir / RESULTS_FILE).write_text(text)
    return text


def test_a_finished_job_is_returned_without_loading_anything(tmp_path, monkeypatch):
    _write(tmp_path, _cfg(tmp_path, "cache_dir=/elsewhere"))
    monkeypatch.setattr(runner, "Experiment", lambda *a, **k: pytest.fail("a finished job was run again"))
    # where the caches live is no part of the job: another cache_dir still finds it done
    done = runner.run(_cfg(tmp_path, f"cache_dir={tmp_path / 'cache'}"))
    assert done["marker"] == 7


def test_results_of_another_config_are_refused_and_kept(tmp_path, monkeypatch):
    text = _write(tmp_path, _cfg(tmp_path, "seed=1"))
    monkeypatch.setattr(runner, "Experiment", lambda *a, **k: pytest.fail("ran over another job's results"))
    with pytest.raises(ConfigError, match=r"another config \(seed=1 there, 0 now, "):
        runner.run(_cfg(tmp_path, "seed=0"))
    assert (tmp_path / RESULTS_FILE).read_text() == text


def test_off_by_default_and_a_job_without_results_runs(tmp_path, monkeypatch):
    class Ran(Exception):
        pass

    def experiment(*a, **k):
        raise Ran

    monkeypatch.setattr(runner, "Experiment", experiment)
    assert compose_config(["experiment=smoke"]).trainer.skip_if_done is False
    with pytest.raises(Ran):  # nothing there yet: the job runs
        runner.run(_cfg(tmp_path))
    _write(tmp_path, _cfg(tmp_path))
    with pytest.raises(Ran):  # skip_if_done=false: a finished job runs again, as before
        runner.run(_cfg(tmp_path, "trainer.skip_if_done=false"))


@pytest.mark.parametrize("node, key, override, refused", [
    ("objective", "teachers", "objective.teachers.combine=sum", r"objective.teachers.combine=None there, .*'sum'.* now"),
    # a key of a group node (trainer, teacher, ...): its default is the node dataclass's
    ("trainer", "on_policy", "trainer.on_policy.top_p=0.9", r"trainer.on_policy.top_p=None there, 0.9 now"),
])
def test_results_written_before_a_key_was_added_are_this_configs_at_its_default(tmp_path, monkeypatch, node, key,
                                                                                 override, refused):
    """A finished job of a kdlab without ``objective.teachers`` or ``trainer.on_policy``
    (added since, at defaults that compute the same) is still found done, so a study
    committed by an older kdlab stays resumable; the key set otherwise is another config."""
    cfg = _cfg(tmp_path)
    old = OmegaConf.to_container(cfg, resolve=True)
    del old[node][key]
    (tmp_path / RESULTS_FILE).write_text(json.dumps({"marker": 7, "config": old}))
    monkeypatch.setattr(runner, "Experiment", lambda *a, **k: pytest.fail("a finished job was run again"))
    assert runner.run(cfg)["marker"] == 7
    with pytest.raises(ConfigError, match=refused):
        runner.run(_cfg(tmp_path, override))


def test_the_committed_cpu_study_is_found_done_by_todays_kdlab():
    """Each job committed under docs/results/glue_cpu/runs, composed again from its own
    overrides, is this kdlab's finished job: `make table-glue-cpu` on a fresh checkout
    resumes with nothing to run instead of refusing the study as another config."""
    from pathlib import Path

    from kdlab.metadata import finished_results

    runs = sorted(Path(__file__).resolve().parents[1].glob("docs/results/glue_cpu/runs/*/*/*/results.json"))
    assert len(runs) == 42
    for path in runs:
        overrides = OmegaConf.to_container(OmegaConf.load(path.parent / ".hydra" / "overrides.yaml"))
        cfg = compose_config([*overrides, f"output_dir={path.parent}"])
        assert finished_results(path.parent, OmegaConf.to_container(cfg, resolve=True)) is not None, path
