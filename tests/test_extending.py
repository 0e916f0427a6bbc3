"""Extending kdlab by adding files only (docs/extending.md): a module dropped into a
registry's folder is found without editing a list of imports, and a new divergence runs
end to end through the command line from one Python file plus one YAML option."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kdlab.registry import Registry, discover
from tests.conftest import REPO

NEW_DIVERGENCE = '''
"""Half the forward KL: a divergence added as one file, for tests/test_extending.py."""

from torch import Tensor

from kdlab.divergences import REGISTRY
from kdlab.divergences.base import LogitDivergence


@REGISTRY.register("half_kl")
class HalfKL(LogitDivergence):
    """``0.5 * sum_c p_c (log p_c - log q_c)``; reference: the teacher ``p``."""

    def __init__(self, scale: float = 0.5, **kw) -> None:
        super().__init__(**kw)
        self.scale = float(scale)

    def pointwise(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        return self.scale * (log_p.exp() * (log_p - log_q)).sum(-1)
'''

NEW_METHOD = '''
"""The last hidden states' MSE, mean over real tokens: a method added as one file."""

import torch
import torch.nn.functional as F

from kdlab.families.base import Outputs
from kdlab.features import FEATURE_TERMS, layer_count
from kdlab.methods.layers import HiddenStatePairs


@FEATURE_TERMS.register("last_hidden_mse")
class LastHiddenMSE(HiddenStatePairs):
    def __init__(self, stack=None) -> None:
        super().__init__([[-1, -1]], loss="mse", stack=stack)

    def bind(self, teacher, student, stacks) -> None:
        stack = self.resolve_stack(stacks)
        self.pairs = [[layer_count(teacher.config, stack), layer_count(student.config, stack)]]
        super().bind(teacher, student, stacks)

    def forward(self, student: Outputs, teacher: Outputs) -> torch.Tensor:
        h_s, h_t, mask = self.hidden_pair(student, teacher)
        (lt, ls), = self.pairs
        return F.mse_loss(h_s[ls][mask].float(), h_t[lt][mask].float().detach())
'''

NEW_OPTION = """\
# Half the forward KL (kdlab/divergences/half_kl.py)
name: half_kl
weight: 1.0
params:
  temperature: 2.0
  scale: 0.5
"""


def test_discover_imports_every_public_module_of_a_folder(tmp_path, monkeypatch):
    pkg = tmp_path / "plugins_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from kdlab.registry import Registry
        THINGS = Registry("thing")
    """))
    for name in ("first", "second", "_helper"):
        (pkg / f"{name}.py").write_text(textwrap.dedent(f"""
            from plugins_pkg import THINGS
            THINGS.register("{name}")(object)
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert discover("plugins_pkg") == ["first", "second"]  # a leading underscore: a helper, not imported
    things: Registry = sys.modules["plugins_pkg"].THINGS
    assert things.names() == ["first", "second"]


def copy_of_kdlab(root: Path) -> Path:
    """The package as shipped, in a directory of its own (the checkout stays untouched)."""
    shutil.copytree(REPO / "kdlab", root / "kdlab", ignore=shutil.ignore_patterns("__pycache__"))
    return root / "kdlab"


def test_a_new_divergence_or_method_file_is_registered_without_any_other_edit(tmp_path):
    pkg = copy_of_kdlab(tmp_path)
    (pkg / "divergences" / "half_kl.py").write_text(NEW_DIVERGENCE)
    (pkg / "methods" / "last_hidden.py").write_text(NEW_METHOD)
    code = ("from kdlab import divergences; from kdlab.features import FEATURE_TERMS; import torch;"
            "torch.manual_seed(0); z = torch.randn(4, 3);"
            "print(divergences.get('half_kl', temperature=1.0)(z, 3 * z).item() * 2,"
            " divergences.get('kl')(z, 3 * z).item(), 'last_hidden_mse' in FEATURE_TERMS)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    half_doubled, kl, method = out.stdout.split()
    assert float(half_doubled) == pytest.approx(float(kl)) and method == "True"



def run_copy(tmp_path: Path, option: str, data_dir: Path, cache_dir: Path) -> Path:
    """A tiny ``experiment=smoke`` run of the package copy under ``tmp_path/src`` with
    ``option``, in an environment that cannot see the checkout; returns its run dir."""
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "kdlab", "experiment=smoke", option, "logger=none",
         f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}", f"dataset.data_dir={data_dir}",
         "trainer.max_steps=2", "teacher.finetune.max_steps=2", "dataset.max_train_samples=32",
         "dataset.max_eval_samples=32", "teacher.finetune.max_train_samples=32", "trainer.save_student=false"],
        cwd=tmp_path / "src", capture_output=True, text=True, timeout=900,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
             "HOME": str(Path.home()), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir

@pytest.mark.slow
def test_a_new_divergence_runs_through_the_cli_from_one_file_and_one_yaml(tmp_path, data_dir, cache_dir):
    """One Python file in kdlab/divergences/ and one YAML in kdlab/configs/divergence/:
    ``kdlab ... divergence=half_kl`` trains with it and reports it."""
    pkg = copy_of_kdlab(tmp_path / "src")
    (pkg / "divergences" / "half_kl.py").write_text(NEW_DIVERGENCE)
    (pkg / "configs" / "divergence" / "half_kl.yaml").write_text(NEW_OPTION)
    run_dir = run_copy(tmp_path, "divergence=half_kl", data_dir, cache_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["divergence"] == "half_kl"
    assert results["config"]["divergence"]["params"] == {"temperature": 2.0, "scale": 0.5}
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("student/half_kl" in row for row in logged)


NEW_TASK = '''
"""Movie reviews from local TSV files (tests/test_extending.py)."""

from kdlab.data.local import tsv_task

tsv_task("reviews", label_names=("bad", "good"), text=("review", None), label_column="verdict",
         prompts={"seq2seq": {"input": "review: {text_a}", "targets": ["bad", "good"]}},
         description="Reviews: is a review good or bad; accuracy.")
'''

NEW_TASK_OPTION = """\
# Movie reviews from <data_dir>/local/reviews/{train,dev}.tsv (kdlab/data/local/reviews.py)
name: local/reviews
max_length: 32
"""


def write_reviews(data_dir: Path, n: int = 48) -> None:
    root = data_dir / "local" / "reviews"
    root.mkdir(parents=True)
    words = {"good": ["great", "fine", "lovely"], "bad": ["awful", "dull", "poor"]}
    for split, offset in (("train", 0), ("dev", 1)):
        rows = ["review\tverdict"]
        for i in range(n):
            verdict = ("good", "bad")[(i + offset) % 2]
            rows.append(f"a {words[verdict][i % 3]} film number {i}\t{verdict}")
        (root / f"{split}.tsv").write_text("\n".join(rows) + "\n")


def test_a_new_local_task_is_one_task_module(tmp_path):
    pkg = copy_of_kdlab(tmp_path / "src")
    (pkg / "data" / "local" / "reviews.py").write_text(NEW_TASK)
    write_reviews(tmp_path / "data")
    code = ("from kdlab.data import get_task, load_split; from kdlab.data.prompts import seq2seq, template;"
            f"ex = load_split('local/reviews', 'validation', data_dir={str(tmp_path / 'data')!r});"
            "spec = get_task('local/reviews');"
            "print(len(ex), ex[0].label, spec.eval_splits, seq2seq('local/reviews', ex[0], template('local/reviews', 'seq2seq')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "src", capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "48 0 ('validation',) ('review: a awful film number 0', 'bad')"


@pytest.mark.slow
def test_a_new_local_task_runs_through_the_cli_from_one_module_and_one_yaml(tmp_path, cache_dir):
    pkg = copy_of_kdlab(tmp_path / "src")
    (pkg / "data" / "local" / "reviews.py").write_text(NEW_TASK)
    (pkg / "configs" / "dataset" / "local").mkdir()
    (pkg / "configs" / "dataset" / "local" / "reviews.yaml").write_text(NEW_TASK_OPTION)
    write_reviews(tmp_path / "data")
    run_dir = run_copy(tmp_path, "dataset=local/reviews", tmp_path / "data", cache_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["task"] == "local/reviews" and results["metric"] == "accuracy"
    assert set(results["student"]["dev"]) >= {"accuracy"}
