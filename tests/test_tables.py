"""kdlab-table on synthetic sweeps: means and stds over seeds, both protocols, the average,
gaps for failed and missing runs, reference differences, and every output format."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from kdlab import tables
from kdlab.tables import AVERAGE, build_table, find_runs

METRICS = {"glue/sst2": "accuracy", "glue/cola": "mcc"}


def write_run(root: Path, num: int, method: str, task: str, seed: int, best: float | None = None,
              last: float | None = None, dev: float | None = None) -> Path:
    """A Hydra job directory; with scores, a results.json as the runner writes it."""
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    cfg = {"experiment_name": method, "dataset": {"name": task}, "seed": seed,
           "divergence": {"name": f"div_{method}"}}
    (job / ".hydra" / "config.yaml").write_text(json.dumps(cfg))  # JSON is YAML
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
    assert [(r.method, r.task, r.seed) for r in table.failed] == [("kd", "glue/cola", 2)]
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
    table = build_table(runs, tables._match_reference(tables.read_reference(ref), runs))
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
