"""Every task, in every model family, through the runner's own path: original-format
files -> ``Experiment.examples`` -> the family's dataset -> a training batch's loss ->
``Experiment.evaluate`` (predictions of a tiny model, official metrics) and the majority
baseline. Models are tiny and random: the point is that each task is read, fed,
predicted and scored in each family, grouped metrics (MultiRC's exact match, ReCoRD's
answer strings, AX-g's gender parity) included. The diagnostic sets train on their
``train_task``'s files and are scored on the diagnostic file."""

from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import pytest
import torch
from data_samples import SAMPLES, write_samples
from omegaconf import OmegaConf

from kdlab.assembly import Experiment
from kdlab.config import TeacherConfig
from kdlab.data import get_task, load_split
from kdlab.errors import ConfigError
from kdlab.families import get_family
from kdlab.models import TEACHERS
from kdlab.products import majority_metrics
from kdlab.tracking import NullTracker
from kdlab.validation import validate
from tests.conftest import compose_config

TASKS = sorted(SAMPLES)
DIAGNOSTICS = {"glue/ax": "glue/mnli", "superglue/axb": "superglue/rte", "superglue/axg": "superglue/rte"}
PRESETS = {"encoder": "smoke", "seq2seq": "smoke_seq2seq", "causal": "smoke_causal"}
# what a family cannot do, refused on the config: an encoder classifier has no head for
# a variable set of candidates; rank classification has no classes for STS-B's scores
REFUSED = {("encoder", "superglue/copa"), ("encoder", "superglue/record"), ("causal", "glue/stsb")}


def test_seventeen_tasks_with_training_data_and_three_diagnostics():
    assert len([t for t in TASKS if "train" in get_task(t).splits]) == 17
    assert {t: get_task(t).train_task for t in TASKS if get_task(t).train_task} == DIAGNOSTICS


@pytest.fixture(scope="module")
def tiny_models(cache_dir):
    """``tiny_models(family, num_labels)``: a small random model and its tokenizer."""
    built: Dict[Tuple[str, int], Any] = {}

    def make(family: str, num_labels: int):
        key = (family, num_labels if family == "encoder" else 0)
        if key not in built:
            # the family's tiny teacher (teacher=tiny_bert / tiny_t5 / tiny_gpt2), an encoder
            # smaller than tiny_bert's default (one is built per label count)
            sizes = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
            tcfg = TeacherConfig(name="tiny", family=family, overrides=sizes if family == "encoder" else {})
            loaded = TEACHERS.get("tiny")(OmegaConf.structured(tcfg), num_labels, str(cache_dir), get_family(family))
            built[key] = (loaded.model, loaded.tokenizer)
        return built[key]

    return make


@pytest.mark.parametrize("family", sorted(PRESETS))
@pytest.mark.parametrize("task", TASKS)
def test_task_trains_and_scores_in_family(task, family, tmp_path, tiny_models):
    data = write_samples(tmp_path / "data", task)
    if task in DIAGNOSTICS:
        write_samples(data, DIAGNOSTICS[task])
    spec = get_task(task)
    # a regression task refuses the presets' class-distribution terms: the objective it takes
    regression = ["divergence=mse", "objective.alpha=0"] if spec.is_regression else []
    cfg = compose_config([f"experiment={PRESETS[family]}", f"dataset={task}", f"dataset.data_dir={data}",
                          f"cache_dir={tmp_path / 'cache'}", "logger=none", *regression])
    if (family, task) in REFUSED:
        with pytest.raises(ConfigError, match=f"^dataset={task} (is a multiple_choice task|has no causal template)"):
            validate(cfg)
        return
    validate(cfg)
    exp = Experiment(cfg, NullTracker(), torch.device("cpu"))
    model, tokenizer = tiny_models(family, spec.num_labels)

    train_examples = exp.examples("train", None, 0)
    if task in DIAGNOSTICS:  # the train_task's training file
        assert [ex.text_a for ex in train_examples] == \
            [ex.text_a for ex in load_split(DIAGNOSTICS[task], "train", data_dir=str(data))]
    train = exp.encode(tokenizer, train_examples)
    batch = train.collate([train[i] for i in range(len(train))])
    loss = exp.family.supervised_loss(exp.family.forward(model, batch), batch)
    assert math.isfinite(loss.item())

    evals = {s: exp.encode(tokenizer, exp.examples(s, None, 0)) for s in spec.eval_splits}
    metrics = exp.evaluate(model, evals)
    first, *others = spec.eval_splits
    names = set(spec.metrics) | ({"ece"} if spec.label_names else set())  # calibration: fixed label sets
    expected = names | {f"{s}/{m}" for s in others for m in names}
    assert set(metrics) == expected, (first, metrics)
    for name, value in metrics.items():
        assert -1.0 <= value <= 1.0, (name, value)
    if spec.label_names:  # the runner's majority baseline scores the same way
        base = majority_metrics(task, train.labels.numpy(), evals[first].examples)
        assert set(base) == set(spec.metrics)
