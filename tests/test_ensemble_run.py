"""Several teachers through a run, with tiny BERT teachers on a small SST-2 file: each
teacher's cache key, the pair checks of every teacher, and one run from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from kdlab import ensemble
from kdlab.assembly import Experiment, assemble
from kdlab.errors import ConfigError
from kdlab.tracking import NullTracker
from tests.conftest import compose_config, run_cli

WORDS = ["good", "great", "fine", "film", "bad", "dull", "awful", "plot", "a", "the", "was", "very"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tokenizer() -> PreTrainedTokenizerFast:
    """A word-level WordPiece tokenizer over ``WORDS``, BERT's special tokens around a text."""
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(SPECIAL + WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def tiny_teacher(directory: Path, vocab_shortfall: int = 0) -> Path:
    """A 1-layer BERT without a task head and its WordPiece tokenizer (``vocab_shortfall``
    rows fewer in the model's vocabulary than the tokenizer has: an incompatible teacher)."""
    tok = tokenizer()
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok) - vocab_shortfall, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
              ).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def sst2(root: Path) -> Path:
    """glue/SST-2 train (48 rows) and dev (16 rows) in the task's format."""
    d = root / "glue" / "SST-2"
    d.mkdir(parents=True)
    pos, neg = WORDS[:4], WORDS[4:8]

    def rows(n: int, offset: int) -> str:
        lines = ["sentence\tlabel"]
        for i in range(offset, offset + n):
            words = pos if i % 2 else neg
            lines.append(f"the {words[i % 4]} {WORDS[8 + i % 4]} {words[(i // 2) % 4]}\t{i % 2}")
        return "\n".join(lines) + "\n"

    (d / "train.tsv").write_text(rows(48, 0))
    (d / "dev.tsv").write_text(rows(16, 100))
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ensemble")
    tiny_teacher(root / "teacher")
    tiny_teacher(root / "small_vocab", vocab_shortfall=3)
    sst2(root / "data")
    return root


def teachers(files: Path, tmp: Path, *extra: str) -> List[str]:
    """Overrides of a run with teachers a and b (finetune seeds 0 and 1) on the tiny files."""
    path = files / "teacher"
    return ["teacher=pretrained", f"teacher.path={path}", "+teacher@teachers.a=pretrained", f"teachers.a.path={path}",
            "+teacher@teachers.b=pretrained", f"teachers.b.path={path}", "teachers.b.finetune.seed=1",
            "student=from_teacher", "student.layers=[0]", "divergence=none", "dataset=glue/sst2",
            f"dataset.data_dir={files / 'data'}", "dataset.max_length=16", f"cache_dir={tmp / 'cache'}",
            "logger=none", *extra]


def test_teacher_cache_keys_follow_the_finetune_recipe_not_the_entry(files, tmp_path):
    """A finetune seed of its own gives a teacher its own key; an entry identical but for
    its name and weight shares the first one's, which is the single teacher's."""
    cfg = compose_config(teachers(files, tmp_path, "+teacher@teachers.c=pretrained",
                                  f"teachers.c.path={files / 'teacher'}", "teachers.c.weight=2"))
    exp = Experiment(cfg, NullTracker(), torch.device("cpu"))
    keys = {}
    for m in ensemble.members(cfg):
        loaded = exp.load_teacher(m.cfg, m.name)
        keys[m.name] = exp.teacher_key(loaded, m.cfg, exp.finetune_examples(m.cfg))
    single = exp.load_teacher()
    assert keys["a"] != keys["b"]
    assert keys["a"] == keys["c"] == exp.teacher_key(single, cfg.teacher, exp.finetune_examples(cfg.teacher))


def test_a_pair_check_failing_on_the_second_teacher_is_refused_naming_it(files, tmp_path):
    cfg = compose_config(teachers(files, tmp_path, f"teachers.b.path={files / 'small_vocab'}"))
    exp = Experiment(cfg, NullTracker(), torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"^teachers.b: incompatible teacher/student pair: the teacher has a "
                                          r"vocabulary of 14 tokens, smaller than its tokenizer's 17"):
        assemble(exp)
    assert not (tmp_path / "cache" / "teachers").exists()  # refused before any fine-tuning


def test_a_run_with_two_teachers_from_the_command_line(files, tmp_path):
    run = tmp_path / "run"
    out = run_cli([*teachers(files, tmp_path, "trainer.max_steps=3", "trainer.batch_size=8", "trainer.progress=false",
                             "trainer.save_student=false", "hardware.num_threads=1"), f"hydra.run.dir={run}"])
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((run / "results.json").read_text())
    assert list(res["teachers"]) == ["a", "b"]
    assert res["teachers"]["a"]["dev"] == res["teacher"]["dev"]  # the first teacher is the teacher row
    assert [res["teachers"][k]["weight"] for k in "ab"] == [0.5, 0.5]
    assert res["teacher_mixture"]["weights"] == {"a": 0.5, "b": 0.5}
    assert 0 <= res["teacher_mixture"]["dev"]["accuracy"] <= 1 and "ece" in res["teacher_mixture"]["dev"]
    assert res["student"]["dev"]["accuracy"] >= 0
    cache = tmp_path / "cache"
    assert len([p for p in (cache / "teachers").iterdir() if not p.name.startswith(".")]) == 2  # one per seed
    assert len(list((cache / "teacher_outputs").glob("*.npy"))) == 2  # one per teacher


@pytest.mark.slow
def test_a_run_with_two_teachers_summed_from_the_command_line(files, tmp_path):
    """combine=sum through the trainer: the objective wrapped, each teacher's table read."""
    run = tmp_path / "run"
    out = run_cli([*teachers(files, tmp_path, "trainer.max_steps=3", "trainer.batch_size=8", "trainer.progress=false",
                             "trainer.save_student=false", "hardware.num_threads=1", "objective.teachers.combine=sum",
                             "teachers.b.weight=3"), f"hydra.run.dir={run}"])
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((run / "results.json").read_text())
    assert [res["teachers"][k]["weight"] for k in "ab"] == [0.25, 0.75]
    assert res["config"]["objective"]["teachers"]["combine"] == "sum" and res["steps"] == 3
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("student/kd" in row for row in logged)
