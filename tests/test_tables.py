"""kdlab-table on synthetic sweeps: rows from what the sweep varies, means and stds over seeds,
both protocols, the average, gaps for failed and missing runs, reference differences, paired
differences from a baseline row with their t interval, and every output format."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from kdlab import tables
from kdlab.stats import paired_difference
from kdlab.tables import AVERAGE, build_table, find_runs
from tests.conftest import run_cli

METRICS = {"glue/sst2": "accuracy", "glue/cola": "mcc", "glue/mrpc": "f1"}


def write_run(root: Path, num: int, method: str, task: str, seed: int, best: float | None = None,
              last: float | None = None, dev: float | None = None, overrides: list[str] | None = None) -> Path:
    """A Hydra job directory; with scores, a results.json as the runner writes it; with
    overrides, the .hydra/overrides.yaml Hydra writes (without, rows fall back to the name)."""
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    cfg = {"experiment_name": method, "dataset": {"name": task}, "seed": seed,
           "divergence": {"name": f"div_{method}"}}
    (job / ".hydra" / "config.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    if overrides is not None:
        (job / ".hydra" / "overrides.yaml").write_text(json.dumps(overrides))
    if best is None and dev is None:
        return job  # a failed or unfinished run
    metric = METRICS[task]
    student = {"name": "from_teacher", "params": 1, "dev": {metric: dev if dev is not None else last}}
    if best is not None:
        student.update(dev_best={metric: best, "other": 0.0}, dev_last={metric: last, "other": 0.0})
    res = {"task": task, "metric": metric, "teacher": {"name": "t", "params": 2, "dev": {metric: 0.9}},
           "student": student, "divergence": "none", "seed": seed, "steps": 4, "wall_seconds": 1.0,
           "config": cfg}
    (job / "results.json").write_text(json.dumps(res))
    return job


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """2 methods x 2 tasks x 3 seeds; kd/cola seed 2 failed, sinkd/cola seed 2 never started."""
    n = 0
    for mi, method in enumerate(("kd", "sinkd")):
        for ti, task in enumerate(("glue/sst2", "glue/cola")):
            for seed in range(3):
                if task == "glue/cola" and seed == 2:
                    if method == "kd":
                        write_run(tmp_path, n, method, task, seed)
                        n += 1
                    continue
                best = 0.5 + 0.1 * mi + 0.05 * ti + 0.01 * seed
                write_run(tmp_path, n, method, task, seed, best=best, last=best - 0.02)
                n += 1
    return tmp_path


def scores(root: Path, method: str, task: str, key: str) -> list[float]:
    out = []
    for p in sorted(root.rglob("results.json")):
        r = json.loads(p.read_text())
        if r["config"]["experiment_name"] == method and r["task"] == task:
            out.append(100 * r["student"][key][r["metric"]])
    return out


def test_cells_are_means_and_stds_over_seeds(sweep):
    table = build_table(find_runs(sweep))
    assert table.methods == ["teacher", "kd", "sinkd"]  # the presets' order
    assert table.cells["teacher", "glue/sst2", "best"].values == [90.0, 90.0, 90.0]  # once per seed
    assert table.tasks == ["glue/cola", "glue/sst2", AVERAGE]
    assert table.seeds == [0, 1, 2]
    for m in ("kd", "sinkd"):
        for t in ("glue/sst2", "glue/cola"):
            for protocol, key in (("best", "dev_best"), ("last", "dev_last")):
                values = scores(sweep, m, t, key)
                cell = table.cells[m, t, protocol]
                assert cell.mean == pytest.approx(statistics.fmean(values))
                assert cell.std == pytest.approx(statistics.stdev(values))
    # kd: sst2 50, 51, 52; cola 55, 56 (seed 2 failed) -> the average uses seeds 0 and 1
    avg = table.cells["kd", AVERAGE, "best"]
    assert avg.values == pytest.approx([52.5, 53.5])
    assert avg.failed == 1


def test_gaps_are_counted_and_listed(sweep):
    table = build_table(find_runs(sweep))
    assert [(r.row, r.task, r.seed) for r in table.failed] == [("kd", "glue/cola", 2)]
    assert table.missing() == [("sinkd", "glue/cola", 2)]
    kd_cola = table.cells["kd", "glue/cola", "best"]
    assert kd_cola.failed == 1 and kd_cola.text().endswith("(2/3)")
    assert table.cells["kd", "glue/sst2", "best"].text() == "51.0 ± 1.0"
    md = tables.to_markdown(table, "t", str(sweep))
    assert "10 runs with results, 1 failed or unfinished, 1 missing" in md
    assert "failed or unfinished: kd / glue/cola / seed 2" in md
    assert "missing: sinkd / glue/cola / seed 2" in md


def test_a_cell_with_only_failed_runs_is_a_gap_not_a_zero(tmp_path):
    write_run(tmp_path, 0, "kd", "glue/sst2", 0, best=0.8, last=0.8)
    write_run(tmp_path, 1, "sinkd", "glue/sst2", 0)
    table = build_table(find_runs(tmp_path))
    cell = table.cells["sinkd", "glue/sst2", "best"]
    assert cell.mean is None and cell.text() == "– (1 failed)"
    assert table.cells["sinkd", AVERAGE, "last"].mean is None
    assert "sinkd" in tables.to_markdown(table, "t", "s")  # the row is still there


def test_runs_without_protocol_keys_fall_back_to_dev(tmp_path):
    write_run(tmp_path, 0, "kd", "glue/sst2", 0, dev=0.75)
    table = build_table(find_runs(tmp_path))
    assert table.cells["kd", "glue/sst2", "best"].mean == pytest.approx(75.0)
    assert table.cells["kd", "glue/sst2", "last"].mean == pytest.approx(75.0)
    assert table.cells["kd", "glue/sst2", "best"].std is None  # one seed: no std, no "± 0"


def test_reference_differences(sweep, tmp_path):
    ref = tmp_path / "ref.csv"
    ref.write_text("method,task,value\nkd,SST-2,50.0\nkd,glue/cola,60.0\nsinkd,SST-2,70.0\n")
    runs = find_runs(sweep)
    table = build_table(runs, tables.match_reference(tables.read_reference(ref), runs))
    assert table.cells["kd", "glue/sst2", "best"].diff == pytest.approx(51.0 - 50.0)
    assert table.cells["kd", "glue/sst2", "last"].diff == pytest.approx(49.0 - 50.0)
    assert table.cells["kd", AVERAGE, "best"].reference == pytest.approx(55.0)
    assert table.cells["sinkd", "glue/cola", "best"].reference is None  # no reference: no diff
    md = tables.to_markdown(table, "t", "s")
    assert "Difference from the reference" in md and "+1.0" in md and "-1.0" in md
    json_ref = tmp_path / "ref.json"
    json_ref.write_text(json.dumps({"kd": {"SST-2": 50.0}}))
    assert tables.read_reference(json_ref) == {("kd", "SST-2"): 50.0}


def test_method_key_groups_runs_by_any_config_key(sweep):
    table = build_table(find_runs(sweep, method_key="divergence.name"))
    assert table.methods == ["teacher", "div_kd", "div_sinkd"]
    with pytest.raises(tables.TableError, match="no key 'trainer.nope'"):
        find_runs(sweep, method_key="trainer.nope")


def test_cli_writes_every_format(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert tables.main([str(sweep), "--out", str(out), "--title", "Synthetic"]) == 0
    assert "| Method |" in capsys.readouterr().out
    md = (out / "table.md").read_text()
    assert md.startswith("# Synthetic") and "| KD | 55.5 ± 0.7 (2/3) |" in md
    tex = (out / "table.tex").read_text()
    assert r"\multicolumn{2}{c}{SST-2}" in tex and r"$\pm$" in tex and r"\bottomrule" in tex
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert len(rows) == 3 * 3 * 2  # (teacher + methods) x (tasks + average) x protocols
    row = next(r for r in rows if r["method"] == "kd" and r["task"] == "glue/cola" and r["protocol"] == "best")
    assert (row["n"], row["expected"], row["failed"], row["metric"]) == ("2", "3", "1", "mcc")
    assert float(row["mean"]) == pytest.approx(55.5)
    png = (out / "table.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert tables.main([str(tmp_path)]) == 2
    assert "no runs" in capsys.readouterr().err
    assert tables.main([str(tmp_path / "nowhere")]) == 2


def test_jobs_that_never_started_are_counted_from_multirun_yaml(tmp_path, capsys):
    """A sweep that stopped early: 2 x 3 jobs planned, 2 job directories."""
    write_run(tmp_path, 0, "kd", "glue/sst2", 0, best=0.8, last=0.8)
    write_run(tmp_path, 1, "kd", "glue/sst2", 1)
    (tmp_path / "multirun.yaml").write_text(json.dumps({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"},
        "overrides": {"task": ["experiment=smoke", "+experiment/sinkd/method=kd,sinkd", "seed=range(3)"]}}}))
    assert tables.planned_jobs(tmp_path) == 6
    assert tables.main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "table.md").read_text()
    assert "6 jobs planned, 2 job directories: 1 runs with results, 1 failed" in md
    assert "- 4 planned jobs never started" in md


# -- the paired interval ------------------------------------------------------------------------
T_975_2 = 4.302652729911275  # t_{0.975, 2}: the 97.5% quantile of Student's t with 2 degrees of freedom


def test_paired_interval_by_hand():
    """d = 2, 3, 4 over seeds 0-2 (seed 3 has no pair): mean 3, sd 1, half-width t * 1 / sqrt(3)."""
    d = paired_difference({0: 80.0, 1: 82.0, 2: 85.0, 3: 99.0}, {0: 78.0, 1: 79.0, 2: 81.0})
    half_a = T_975_2 * 1.0 / 3 ** 0.5  # = 2.4841
    assert (d.n, d.mean) == (3, pytest.approx(3.0))
    assert (d.low, d.high) == (pytest.approx(3.0 - half_a), pytest.approx(3.0 + half_a))
    assert d.significant  # [0.52, 5.48] excludes 0
    # d = 2, 1, 4: mean 7/3, sd^2 = ((1/3)^2 + (4/3)^2 + (5/3)^2) / 2 = 7/3
    d = paired_difference({0: 2.0, 1: 1.0, 2: 4.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    half = T_975_2 * (7 / 3) ** 0.5 / 3 ** 0.5  # = 3.7946
    assert (d.low, d.high) == (pytest.approx(7 / 3 - half), pytest.approx(7 / 3 + half))
    assert not d.significant  # [-1.46, 6.13] holds 0
    neg = paired_difference({0: 78.0, 1: 79.0, 2: 81.0}, {0: 80.0, 1: 82.0, 2: 85.0})  # d = -2, -3, -4
    assert (neg.low, neg.high, neg.significant) == (pytest.approx(-3.0 - half_a), pytest.approx(-3.0 + half_a), True)
    one = paired_difference({0: 5.0, 1: 6.0}, {1: 4.0})
    assert (one.n, one.mean, one.low, one.significant) == (1, 2.0, None, False)  # one pair: no interval
    assert paired_difference({0: 5.0}, {1: 4.0}).mean is None


# -- rows from what the sweep varies ------------------------------------------------------------
def smoke_sweep(root: Path, divergences=("kl", "sinkhorn"), seeds=(0, 1), score=None) -> Path:
    """`kdlab -m experiment=smoke divergence=kl,sinkhorn seed=0,1`: every job is named smoke."""
    score = score or (lambda i, s: 0.6 + 0.1 * i + 0.01 * s)
    n = 0
    for i, div in enumerate(divergences):
        for s in seeds:
            write_run(root, n, "smoke", "glue/sst2", s, best=score(i, s), last=score(i, s),
                      overrides=["experiment=smoke", f"divergence={div}", f"seed={s}", "logger=none"])
            n += 1
    return root


def test_a_sweep_over_a_non_preset_group_has_one_row_per_value(tmp_path):
    table = build_table(find_runs(smoke_sweep(tmp_path)))
    assert table.methods == ["teacher", "kl", "sinkhorn"]
    assert [table.label(m) for m in table.methods] == ["Teacher", "kl", "sinkhorn"]
    assert "`divergence`" in table.rows_by
    for m, base in (("kl", 60.0), ("sinkhorn", 70.0)):
        cell = table.cells[m, "glue/sst2", "best"]
        assert (cell.values, cell.expected) == ([pytest.approx(base), pytest.approx(base + 1)], 2)
        assert "(" not in cell.text()  # 2 of 2 seeds: no (k/n)
    # the old grouping by name alone cannot tell the rows apart: refused, not merged
    with pytest.raises(tables.TableError, match="cannot be told apart"):
        build_table(find_runs(tmp_path, method_key="experiment_name"))


def test_method_presets_keep_their_names_and_the_task_override_is_a_column(tmp_path):
    """The Makefile's table sweeps: the task and method rows are both swept."""
    n = 0
    for method in ("finetune", "kd", "sinkd"):
        for task in ("sst2", "mrpc"):
            for s in (0, 1):
                write_run(tmp_path, n, method, f"glue/{task}", s, best=0.7, last=0.7, overrides=[
                    "experiment=sinkd/glue_cpu", f"experiment/sinkd/glue/task={task}", f"seed={s}",
                    f"experiment/sinkd/method={method}", "logger=none"])
                n += 1
    table = build_table(find_runs(tmp_path))
    assert table.methods == ["teacher", "finetune", "kd", "sinkd"]
    assert table.label("sinkd") == "SinKD (faithful)" and table.tasks == ["glue/mrpc", "glue/sst2", AVERAGE]
    assert "`experiment/sinkd/method`" in table.rows_by
    out = tmp_path / "out"  # the baseline by its display name, as `make table-glue-cpu` output is read
    assert tables.main([str(tmp_path), "--out", str(out), "--baseline", "Student (no teacher)"]) == 0
    md = (out / "table.md").read_text()
    assert "## Difference from Student (no teacher)" in md and "| KD | +0.0 [+0.0, +0.0] |" in md


def test_cpu_study_layout_no_teacher_sweep_beside_the_distilled_one(tmp_path):
    """`make table-glue-cpu` sweeps the no-teacher row apart (with transfer=none) into
    <task>/no_teacher and the distilled rows into <task>/distilled; the table reads both,
    one row per method preset, named as usual."""
    for task in ("sst2", "mrpc"):
        n = 0
        for s in (0, 1):
            write_run(tmp_path / task / "no_teacher", s, "finetune", f"glue/{task}", s, best=0.6, last=0.6, overrides=[
                "experiment=sinkd/glue_cpu", f"experiment/sinkd/glue/task={task}", f"seed={s}",
                "experiment/sinkd/method=finetune", "transfer=none", "logger=none", "trainer.skip_if_done=true"])
            for method in ("kd", "sinkd"):
                write_run(tmp_path / task / "distilled", n, method, f"glue/{task}", s, best=0.7 + s / 100,
                          last=0.7, overrides=[
                              "experiment=sinkd/glue_cpu", f"experiment/sinkd/glue/task={task}", f"seed={s}",
                              f"experiment/sinkd/method={method}", "logger=none", "trainer.skip_if_done=true"])
                n += 1
    table = build_table(find_runs(tmp_path))
    assert table.methods == ["teacher", "finetune", "kd", "sinkd"] and not table.failed and not table.missing()
    out = tmp_path / "out"
    assert tables.main([str(tmp_path), "--out", str(out), "--baseline", "KD"]) == 0
    md = (out / "table.md").read_text()
    assert "## Difference from KD" in md and "| Student (no teacher) | **-10.5 [-16.9, -4.1]** |" in md


def test_several_varying_overrides_name_each_row_by_all(tmp_path):
    n = 0
    for div in ("kl", "js"):
        for lr in ("1e-4", "3e-4"):
            write_run(tmp_path, n, "default", "glue/sst2", 0, best=0.7, last=0.7,
                      overrides=[f"divergence={div}", f"+trainer.lr={lr}", "seed=0"])
            n += 1
    table = build_table(find_runs(tmp_path))
    assert table.methods[1:] == ["divergence=kl, trainer.lr=1e-4", "divergence=kl, trainer.lr=3e-4",
                                 "divergence=js, trainer.lr=1e-4", "divergence=js, trainer.lr=3e-4"]


def test_settings_that_do_not_change_results_make_no_rows(tmp_path):
    """A study resumed with another thread count, progress bar, logger or cache directory
    keeps one row per method: those keys do not change what a job computes."""
    for n, (s, extra) in enumerate([(0, []), (1, ["hardware.num_threads=1", "trainer.progress=False",
                                                  "cache_dir=/elsewhere", "logger=wandb"])]):
        write_run(tmp_path, n, "kd", "glue/sst2", s, overrides=["experiment/sinkd/method=kd", f"seed={s}", *extra])
    write_run(tmp_path, 2, "kd", "glue/sst2", 0, overrides=["experiment/sinkd/method=kd", "seed=0", "trainer.lr=1e-3"])
    table = build_table(find_runs(tmp_path))
    assert table.methods == ["(default)", "1e-3"]  # trainer.lr does change results: a row of its own
    assert table.cells["(default)", "glue/sst2", "best"].expected == 2  # seeds 0 and 1 in one row


def test_k_of_n_counts_the_seeds_of_the_row(tmp_path):
    """kl has seeds 0-2 (seed 2 failed); sinkhorn seeds 0-1 only."""
    smoke_sweep(tmp_path, ("kl",), (0, 1))
    write_run(tmp_path, 2, "smoke", "glue/sst2", 2, overrides=["experiment=smoke", "divergence=kl", "seed=2", "logger=none"])
    write_run(tmp_path, 3, "smoke", "glue/sst2", 0, best=0.5, last=0.5,
              overrides=["experiment=smoke", "divergence=sinkhorn", "seed=0", "logger=none"])
    write_run(tmp_path, 4, "smoke", "glue/sst2", 1, best=0.5, last=0.5,
              overrides=["experiment=smoke", "divergence=sinkhorn", "seed=1", "logger=none"])
    table = build_table(find_runs(tmp_path))
    assert table.cells["kl", "glue/sst2", "best"].text().endswith("(2/3)")
    assert table.cells["sinkhorn", "glue/sst2", "best"].expected == 2
    assert all(len(c.values) <= c.expected for c in table.cells.values())
    write_run(tmp_path, 5, "smoke", "glue/sst2", 1, best=0.5, last=0.5,  # seed 1 of sinkhorn twice
              overrides=["experiment=smoke", "divergence=sinkhorn", "seed=1", "logger=none"])
    with pytest.raises(tables.TableError, match="2 finished runs of row 'sinkhorn', task glue/sst2, seed 1"):
        build_table(find_runs(tmp_path))


# -- the baseline -------------------------------------------------------------------------------
def test_baseline_marks_the_differences_whose_interval_excludes_zero(tmp_path):
    """Per seed 0, 1, 2: kl 60, 61, 62; js 62, 64, 64 (d = 2, 3, 2: excludes 0);
    sinkhorn 58, 63, 61 (d = -2, 2, -1: holds 0)."""
    scores = {0: (60, 61, 62), 1: (62, 64, 64), 2: (58, 63, 61)}
    smoke_sweep(tmp_path, ("kl", "js", "sinkhorn"), (0, 1, 2), lambda i, s: scores[i][s] / 100)
    out = tmp_path / "out"
    assert tables.main([str(tmp_path), "--out", str(out), "--baseline", "kl"]) == 0
    md = (out / "table.md").read_text()
    js = next(line for line in md.splitlines() if line.startswith("| js |") and "[" in line)
    sinkhorn = next(line for line in md.splitlines() if line.startswith("| sinkhorn |") and "[" in line)
    half = T_975_2 * (1 / 3) ** 0.5 / 3 ** 0.5  # d = 2, 3, 2: mean 7/3, sd^2 = 1/3
    assert f"**+2.3 [{7 / 3 - half:+.1f}, {7 / 3 + half:+.1f}]**" in js
    assert "**" not in sinkhorn and "-0.3 [" in sinkhorn
    assert "| kl | baseline |" in md and "scipy.stats.t" in md and "Bold: the interval excludes 0" in md
    tex = (out / "table.tex").read_text()
    assert r"\textbf{+2.3 [" in tex and "scipy.stats.t" in tex
    rows = {(r["method"], r["protocol"]): r for r in csv.DictReader((out / "table.csv").open())
            if r["task"] == "glue/sst2"}
    assert (rows["js", "best"]["significant"], rows["sinkhorn", "best"]["significant"]) == ("1", "0")
    assert rows["js", "best"]["baseline"] == "kl" and rows["js", "best"]["paired_n"] == "3"
    assert float(rows["js", "best"]["ci_low"]) == pytest.approx(7 / 3 - half, abs=1e-4)


def test_baseline_with_one_paired_seed_says_n_a(tmp_path, capsys):
    smoke_sweep(tmp_path, ("kl", "sinkhorn"), (0,))
    table = build_table(find_runs(tmp_path), baseline="kl")
    assert table.paired["sinkhorn", "glue/sst2", "best"].low is None
    md = tables.to_markdown(table, "t", "s")
    assert "| sinkhorn | +10.0 [n/a] |" in md
    assert build_table(find_runs(tmp_path), baseline="KL").baseline == "kl"  # by name, any case
    assert tables.main([str(tmp_path), "--out", str(tmp_path / "o"), "--baseline", "nope"]) == 2
    assert "--baseline 'nope' is not a row of this sweep; rows: teacher, kl, sinkhorn" in capsys.readouterr().err


def test_baseline_plot_has_interval_panels(tmp_path):
    smoke_sweep(tmp_path, ("kl", "sinkhorn"), (0, 1, 2))
    out = tmp_path / "out"
    assert tables.main([str(tmp_path), "--out", str(out)]) == 0
    plain = (out / "table.png").stat().st_size
    assert tables.main([str(tmp_path), "--out", str(out), "--baseline", "kl"]) == 0
    from PIL import Image

    with Image.open(out / "table.png") as im:
        assert im.height > 1.8 * 3.6 * 120 * 0.9  # a second line of panels: the differences
    assert (out / "table.png").stat().st_size > plain


# -- end to end ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_readme_sweep_gives_one_row_per_divergence(tmp_path, data_dir, cache_dir, capsys):
    """The README's sweep, shrunk: `kdlab -m experiment=smoke divergence=kl,sinkhorn seed=0,1`."""
    out = run_cli(["-m", "experiment=smoke", "divergence=kl,sinkhorn", "seed=0,1", "trainer.max_steps=2",
                   "teacher.finetune.max_steps=2", "dataset.max_train_samples=32", "dataset.max_eval_samples=32",
                   "logger=none", f"cache_dir={cache_dir}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                  env_extra={"KDLAB_DATA_DIR": str(data_dir)}, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    assert tables.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "table"), "--baseline", "kl"]) == 0
    table = build_table(find_runs(tmp_path / "sweep"), baseline="kl")
    assert table.methods == ["teacher", "kl", "sinkhorn"]
    for m in ("kl", "sinkhorn"):
        cell = table.cells[m, "glue/sst2", "best"]
        assert (len(cell.values), cell.expected) == (2, 2)
    assert table.paired["sinkhorn", "glue/sst2", "best"].n == 2
    md = capsys.readouterr().out
    assert "| kl |" in md and "| sinkhorn |" in md and "| smoke |" not in md


def test_metric_option_tabulates_ece_and_writes_the_reliability_diagram(tmp_path):
    bins = {"bins": 15, "count": [0] * 13 + [2, 2], "accuracy": [0.0] * 13 + [0.5, 1.0],
            "confidence": [0.0] * 13 + [0.9, 0.95]}
    for seed, ece in enumerate((0.10, 0.20)):
        job = write_run(tmp_path, seed, "kd", "glue/sst2", seed, best=0.8, last=0.8)
        res = json.loads((job / "results.json").read_text())
        for who in ("student", "teacher"):
            res[who]["dev"]["ece"] = ece
            res[who]["reliability"] = bins
        res["student"]["dev_best"]["ece"] = res["student"]["dev_last"]["ece"] = ece
        (job / "results.json").write_text(json.dumps(res))
    table = build_table(find_runs(tmp_path, metric="ece"))
    assert table.cells["kd", "glue/sst2", "best"].mean == pytest.approx(15.0)
    paths = tables.write_all(table, tmp_path / "out", "t", "t", "s")
    assert paths["reliability"].stat().st_size > 0
    import matplotlib.pyplot as plt

    def titles():
        out, monkey = [], plt.Axes.set_title
        try:
            plt.Axes.set_title = lambda ax, t, **kw: out.append(t.split("\n")[0])
            tables.reliability.plot_reliability(find_runs(tmp_path), tmp_path / "r.png", "t")
        finally:
            plt.Axes.set_title = monkey
        return out

    assert titles() == ["KD", "teacher"]  # one teacher panel: every row had the same teacher
    res = json.loads((job / "results.json").read_text())
    res["online_teacher"] = {"dev": {}, "reliability": bins}  # a co-trained teacher gets its own panel
    (job / "results.json").write_text(json.dumps(res))
    assert titles() == ["KD", "teacher", "online teacher (KD)"]
    # pooled bins: bin 13 (2 at 0.9, acc 0.5), bin 14 (2 at 0.95, acc 1.0)
    p = tables.reliability.pooled([bins, bins])
    assert p["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.05)
    with pytest.raises(tables.TableError, match="no dev metric 'nope'"):
        find_runs(tmp_path, metric="nope")
