"""Sweep presets: every study x method x task composes, method rows differ only in their
objective, the published recipe is what the task presets hold, the Makefile table commands
compose, the Optuna and submitit presets compose, and a tiny real multirun tabulates."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import statistics
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kdlab import tables
from tests.conftest import REPO, compose_config, run_cli

CONFIGS = REPO / "configs" / "experiment" / "sinkd"
METHODS = sorted(p.stem for p in (CONFIGS / "method").glob("*.yaml"))
GLUE_TASKS = sorted(p.stem for p in (CONFIGS / "glue" / "task").glob("*.yaml"))
STUDIES = ("glue", "glue_cpu", "superglue_seq2seq", "superglue_causal")
# What a method row may change: the objective, the divergence term and its name.
METHOD_KEYS = {"objective", "divergence", "experiment_name"}


def plugin(name: str):
    try:
        found = importlib.util.find_spec(f"hydra_plugins.{name}") is not None
    except ModuleNotFoundError:  # no Hydra plugin at all: the namespace package is missing
        found = False
    if not found:
        pytest.skip(f"{name.replace('_', '-')} is not installed (pip install -e '.[sweep]')")


def test_the_seven_method_rows_exist():
    assert METHODS == ["finetune", "js", "kd", "rkl", "sinkd", "sinkd_sound", "tvd"]
    assert GLUE_TASKS == ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2"]


@pytest.mark.parametrize("study", STUDIES)
def test_method_rows_differ_only_in_the_objective(study):
    base = OmegaConf.to_container(compose_config([f"experiment=sinkd/{study}", "experiment/sinkd/method=kd"]))
    for method in METHODS:
        cfg = compose_config([f"experiment=sinkd/{study}", f"experiment/sinkd/method={method}"])
        row = OmegaConf.to_container(cfg)
        changed = {k for k in row if row[k] != base[k]}
        assert changed <= METHOD_KEYS, (method, changed)
        assert cfg.experiment_name == method  # the table's method label
    finetune = compose_config([f"experiment=sinkd/{study}", "experiment/sinkd/method=finetune"])
    assert finetune.objective.alpha == 0.0 and finetune.divergence.name == "none"
    for method, name in (("rkl", "rkl"), ("js", "js"), ("tvd", "tvd"), ("sinkd", "sinkhorn")):
        cfg = compose_config([f"experiment=sinkd/{study}", f"experiment/sinkd/method={method}"])
        assert (cfg.divergence.name, cfg.divergence.weight, cfg.divergence.params.temperature) == (name, 0.8, 2.0)
    sound = compose_config([f"experiment=sinkd/{study}", "experiment/sinkd/method=sinkd_sound"])
    assert sound.divergence.params.mode == "sound"


@pytest.mark.parametrize("task", GLUE_TASKS)
def test_glue_studies_hold_the_published_recipe(task):
    gpu = compose_config(["experiment=sinkd/glue", f"experiment/sinkd/glue/task={task}"])
    cpu = compose_config(["experiment=sinkd/glue_cpu", f"experiment/sinkd/glue/task={task}"])
    assert gpu.dataset.name == cpu.dataset.name == f"glue/{task}"
    assert (gpu.teacher.name, gpu.teacher.path) == ("pretrained", "bert-base-uncased")
    assert gpu.student.path == "google/bert_uncased_L-6_H-768_A-12"
    assert gpu.dataset.max_length == 128 and gpu.trainer.warmup_ratio == 0.0
    assert gpu.trainer.select == "best" and gpu.trainer.eval_strategy == "steps"
    # The CPU study keeps the task's objective and shrinks everything else.
    assert cpu.objective == gpu.objective
    assert (cpu.teacher.name, cpu.student.name, cpu.hardware.device) == ("minilm", "from_teacher", "cpu")
    assert cpu.trainer.max_steps > 0 and cpu.dataset.max_train_samples is not None


def test_published_recipe_values():
    rte = compose_config(["experiment=sinkd/glue", "experiment/sinkd/glue/task=rte"])
    assert (rte.trainer.batch_size, rte.trainer.epochs, rte.trainer.lr, rte.seed) == (16, 5, 2e-5, 20)
    assert (rte.objective.alpha, rte.objective.kd.temperature, rte.objective.kd.anneal) == (0.9, 3.5, "none")
    assert (rte.teacher.finetune.batch_size, rte.teacher.finetune.epochs, rte.teacher.finetune.lr) == (15, 10, 3e-5)
    mrpc = compose_config(["experiment=sinkd/glue", "experiment/sinkd/glue/task=mrpc"])
    assert (mrpc.objective.alpha, mrpc.objective.kd.temperature, mrpc.objective.kd.anneal) == (1.0, 4.0, "epoch")
    assert rte.trainer.eval_every == 5
    assert compose_config(["experiment=sinkd/glue", "experiment/sinkd/glue/task=mnli"]).trainer.eval_every == 200


@pytest.mark.parametrize("study, family", [("superglue_seq2seq", "seq2seq"), ("superglue_causal", "causal")])
def test_superglue_studies(study, family):
    cfg = compose_config([f"experiment=sinkd/{study}", "dataset=superglue/boolq"])
    assert cfg.teacher.family == family and cfg.dataset.name == "superglue/boolq"


@pytest.mark.parametrize("target", ["table-glue-cpu", "table-glue", "table-superglue-seq2seq",
                                    "table-superglue-causal"])
def test_make_table_commands_compose(target):
    """Every value of every swept key of the documented command composes."""
    for args in _sweeps(target):
        args = [a for a in args if not a.startswith("hydra.")]
        fixed = [a for a in args if "," not in a]
        for a in args:
            key, values = a.split("=", 1)
            for v in values.split(","):
                compose_config([*(f for f in fixed if not f.startswith(key + "=")), f"{key}={v}"])


def _make_n(target: str, *variables: str) -> list:
    # a clean make: under `make test ARGS=...` the outer make's variables reach us through
    # MAKEFLAGS and would be read as the table targets' own ARGS
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS")}
    out = subprocess.run(["make", "-n", target, *variables], capture_output=True, text=True, cwd=REPO,
                         check=True, env=env)
    return out.stdout.replace("\\\n", " ").splitlines()


def _sweeps(target: str, *variables: str) -> list:
    """The arguments of each ``kdlab -m`` line of the target (``make -n``)."""
    return [shlex.split(x.split(";")[0])[2:] for x in _make_n(target, *variables) if "kdlab -m" in x]


def test_cpu_study_target_runs_each_job_once_resumably():
    """`make table-glue-cpu`: 7 rows x SST-2, MRPC x 3 seeds, each job once; the distilled
    rows with the preset's transfer data, the no-teacher row without (it has no teacher term to
    learn it from); fixed sweep directories whose finished jobs are skipped; the table is read
    from the committed runs with KD as the baseline."""
    jobs = []
    for args in _sweeps("table-glue-cpu"):
        kv = dict(a.split("=", 1) for a in args)
        assert kv["trainer.skip_if_done"] == "true" and kv["logger"] == "none"
        assert kv["hydra.sweep.dir"].startswith("multirun/tables/glue_cpu/study/")  # no time stamp
        methods = kv["experiment/sinkd/method"].split(",")
        assert ("transfer" in kv) == (methods == ["finetune"]) and kv.get("transfer", "none") == "none"
        jobs += [(kv["experiment/sinkd/glue/task"], m, s) for m in methods for s in kv["seed"].split(",")]
    assert len(jobs) == len(set(jobs)) == 42
    assert {t for t, _, _ in jobs} == {"sst2", "mrpc"} and {s for _, _, s in jobs} == {"0", "1", "2"}
    assert {m for _, m, _ in jobs} == {"finetune", "kd", "rkl", "js", "tvd", "sinkd", "sinkd_sound"}
    table = next(x for x in _make_n("table-glue-cpu") if "kdlab-table" in x)
    assert "kdlab-table docs/results/glue_cpu/runs --out docs/results/glue_cpu --baseline KD" in table
    assert "--metric accuracy" in table  # MRPC's F1 stays at the all-positive value; SST-2's main metric
    assert "--baseline finetune" in next(x for x in _make_n("table-glue-cpu", "BASELINE=finetune") if "kdlab-table" in x)
    # a subset: the distilled rows alone sweep one directory per task
    assert [a for a in _sweeps("table-glue-cpu", "CPU_METHODS=kd,sinkd", "CPU_TASKS=rte")] == [
        ["experiment=sinkd/glue_cpu", "experiment/sinkd/glue/task=rte", "seed=0,1,2", "experiment/sinkd/method=kd,sinkd",
         "logger=none", "trainer.skip_if_done=true", "hydra.sweep.dir=multirun/tables/glue_cpu/study/rte/distilled"]]


@pytest.mark.parametrize("task", ["sst2", "mrpc"])
def test_cpu_study_preset_sizes_and_transfer(task):
    """The CPU study's sizes, and what the seed varies: the teacher is one per task (its
    fine-tuning rows and seed fixed), the labelled and transfer draws follow the seed."""
    cfgs = {s: compose_config(["experiment=sinkd/glue_cpu", f"experiment/sinkd/glue/task={task}", f"seed={s}",
                               "experiment/sinkd/method=kd"]) for s in (0, 2)}
    cfg = cfgs[2]
    assert (cfg.transfer.name, cfg.transfer.max_samples) == ("unlabelled", 4000)
    assert (cfg.dataset.max_length, cfg.dataset.max_train_samples, cfg.dataset.max_eval_samples) == (64, 1000, None)
    assert (cfg.trainer.max_steps, cfg.trainer.batch_size, cfg.trainer.eval_every) == (250, 32, 25)
    assert cfg.trainer.select == "best" and cfg.trainer.save_student is False
    assert cfg.teacher.finetune == cfgs[0].teacher.finetune  # the same teacher for every seed
    assert (cfg.teacher.finetune.seed, cfg.teacher.finetune.max_train_samples, cfg.teacher.finetune.epochs) == (0, 2000, 2)
    assert cfg.trainer.seed == 2
    plain = compose_config(["experiment=sinkd/glue_cpu", f"experiment/sinkd/glue/task={task}",
                            "experiment/sinkd/method=finetune", "transfer=none"])
    assert plain.transfer.name == "none" and plain.objective.alpha == 0.0


def test_optuna_sweeper_preset_composes():
    plugin("hydra_optuna_sweeper")
    out = run_cli(["--cfg", "hydra", "experiment=sinkd/glue_cpu", "hydra/sweeper=sinkd_optuna"])
    assert out.returncode == 0, out.stderr
    sweeper = OmegaConf.create(out.stdout).hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"objective.kd.temperature", "objective.alpha", "divergence.weight",
                                   "divergence.params.epsilon"}


def test_submitit_launcher_preset_composes():
    plugin("hydra_submitit_launcher")
    out = run_cli(["--cfg", "hydra", "experiment=sinkd/glue", "hydra/launcher=slurm"])
    assert out.returncode == 0, out.stderr
    launcher = OmegaConf.create(out.stdout).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.gpus_per_node == 1


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, data_dir, cache_dir):
    """2 methods x 2 seeds of the smoke preset, 4 steps each, the smoke teacher cached once."""
    sweep = tmp_path_factory.mktemp("sweep")
    out = run_cli(["-m", "experiment=smoke", "+experiment/sinkd/method=kd,sinkd", "seed=0,1",
                   "trainer.max_steps=4", "dataset.max_eval_samples=64", "trainer.eval_strategy=steps",
                   "trainer.eval_every=2", "logger=none", f"cache_dir={cache_dir}",
                   f"hydra.sweep.dir={sweep}"],
                  env_extra={"KDLAB_DATA_DIR": str(data_dir)}, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    return sweep


@pytest.mark.slow
def test_tiny_multirun_table_cells_are_means_of_results(tiny_sweep, tmp_path):
    results = [json.loads(p.read_text()) for p in tiny_sweep.rglob("results.json")]
    assert len(results) == 4
    assert {(r["config"]["experiment_name"], r["seed"]) for r in results} == {
        ("kd", 0), ("kd", 1), ("sinkd", 0), ("sinkd", 1)}
    out = tmp_path / "table"
    assert tables.main([str(tiny_sweep), "--out", str(out)]) == 0
    table = tables.build_table(tables.find_runs(tiny_sweep))
    for method in ("kd", "sinkd"):
        mine = [r for r in results if r["config"]["experiment_name"] == method]
        for protocol, key in (("best", "dev_best"), ("last", "dev_last")):
            values = [100 * r["student"][key]["accuracy"] for r in mine]
            cell = table.cells[method, "glue/sst2", protocol]
            assert cell.mean == pytest.approx(statistics.fmean(values))
            assert cell.std == pytest.approx(statistics.stdev(values))
            assert cell.text().startswith(f"{statistics.fmean(values):.1f}")
            assert table.cells[method, tables.AVERAGE, protocol].mean == pytest.approx(cell.mean)
    assert not table.failed and not table.missing()
    assert all((out / f"table.{ext}").stat().st_size > 0 for ext in ("md", "tex", "csv", "png"))


@pytest.mark.slow
def test_kdlab_table_console_script(tiny_sweep, tmp_path):
    exe = Path(REPO / ".venv" / "bin" / "kdlab-table")
    if not exe.exists():
        pytest.skip("kdlab-table is not installed in .venv (pip install -e .)")
    out = subprocess.run([str(exe), str(tiny_sweep), "--out", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "| KD |" in out.stdout and "| SinKD (faithful) |" in out.stdout


@pytest.mark.slow
def test_optuna_search_runs_and_maximises_the_returned_metric(tmp_path, data_dir, cache_dir):
    plugin("hydra_optuna_sweeper")
    out = run_cli(["-m", "experiment=smoke", "hydra/sweeper=sinkd_optuna", "hydra.sweeper.n_trials=2",
                   "trainer.max_steps=2", "dataset.max_eval_samples=32", "logger=none",
                   f"cache_dir={cache_dir}", f"hydra.sweep.dir={tmp_path}"],
                  env_extra={"KDLAB_DATA_DIR": str(data_dir)}, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    best = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert 0.0 <= best.best_value <= 1.0
    assert set(best.best_params) == {"objective.kd.temperature", "objective.alpha", "divergence.weight",
                                     "divergence.params.epsilon"}
    assert len(list(tmp_path.rglob("results.json"))) == 2
