"""``kdlab-eval``: a saved model's official scores on any task and split.

    python -m kdlab.evaluate RUN_OR_MODEL_DIR [dataset=glue/rte] [split=validation]
        [dataset.max_eval_samples=null] [hardware.device=cuda] [batch_size=64] [--out DIR]

A run directory means its ``student/``. The task defaults to the one the model was
trained on; on that task the run's dataset settings (input length, dev subsample and
seed) apply, so the scores are those of ``results.json``; on another task, its
``dataset`` preset. ``dataset.*`` and ``hardware.*`` keys are typed by the run schema.
Without ``split=`` every dev split of the task is scored, keyed as in ``results.json``.
Writes ``eval.json`` next to the model (or in ``--out``). Data loading, the family's
dataset and predictions and the metrics are the runner's.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kdlab import calibration
from kdlab.batching import loader
from kdlab.config import DatasetConfig, HardwareConfig
from kdlab.data import TaskSpec, get_task, load_split, score
from kdlab.errors import ConfigError, DataError
from kdlab.export import SIDECAR, read_sidecar
from kdlab.families import FAMILIES, Family, get_family
from kdlab.families.base import Predictions
from kdlab.tracking import write_json_atomic

EVAL_FILE = "eval.json"
BATCH_SIZE = 64


def split_metrics(family: Family, task: str, model: torch.nn.Module, evals: Dict[str, Any], batch_size: int,
                  device: torch.device, precision: str) -> Dict[str, float]:
    """Official metrics of ``model`` on each encoded split of ``evals``; the first split's
    keys are unprefixed, the others' ``<split>/<metric>`` (the ``results.json`` form)."""
    return scored(task, {split: (family.predict(model, loader(ds, batch_size), device, precision), ds.examples)
                         for split, ds in evals.items()})


def scored(task: str, predictions: Dict[str, Tuple[Predictions, Sequence[Any]]]) -> Dict[str, float]:
    """Official metrics (and ECE where there are class probabilities) of each split's
    predictions on its examples, in the ``split_metrics`` form: the first split's keys
    unprefixed, the others' ``<split>/<metric>``."""
    out: Dict[str, float] = {}
    for i, (split, (pred, examples)) in enumerate(predictions.items()):
        metrics = score(task, pred.values, examples)  # groups, ReCoRD answers: every family
        correct = correctness(task, pred, examples)
        if correct is not None:
            metrics["ece"] = calibration.ece(pred.confidence, correct)
        out.update({(k if i == 0 else f"{split}/{k}"): float(v) for k, v in metrics.items()})
    return out


def correctness(task: str, pred: Predictions, examples: Sequence[Any]) -> Optional[np.ndarray]:
    """``[N]`` bool, prediction == gold label, where calibration is defined: a task with a
    fixed label set (not STS-B's scores, nor ReCoRD's entity candidates) and a model that
    gives confidences; else ``None``."""
    if pred.confidence is None or not get_task(task).label_names:
        return None
    gold = np.asarray([ex.label for ex in examples])
    return np.asarray(pred.values) == gold


def reliability(family: Family, task: str, model: torch.nn.Module, ds: Any, batch_size: int,
                device: torch.device, precision: str) -> Optional[Dict[str, Any]]:
    """The reliability diagram's bins of ``model`` on one encoded split (``results.json``'s
    ``<model>.reliability``), or ``None`` where calibration is not defined."""
    pred = family.predict(model, loader(ds, batch_size), device, precision)
    correct = correctness(task, pred, ds.examples)
    if correct is None:
        return None
    return {"bins": calibration.BINS, **calibration.reliability(pred.confidence, correct)}


@dataclass
class Request:
    """One command line: the model directory, the task, its splits and the settings."""

    model_dir: Path
    meta: Optional[Dict[str, Any]]
    family: str
    task: TaskSpec
    dataset: Any  # a DatasetConfig node
    hardware: Any  # a HardwareConfig node
    batch_size: int
    out: Optional[Path]
    split: Optional[str]


def model_dir(path: str) -> Path:
    """``path`` itself when it holds a model, else the ``student/`` of a run directory."""
    p = Path(path).expanduser()
    for d in (p, p / "student"):
        if (d / "config.json").is_file():
            return d
    raise ConfigError(f"{path} holds no model: no config.json there nor in {p / 'student'} (give a saved "
                      "model directory, or the directory of a run that saved its student)")


def family_of(path: Path, meta: Optional[Dict[str, Any]]) -> str:
    """The family recorded by kdlab, or the one the checkpoint's architecture names."""
    if meta is not None:
        return meta["family"]
    from transformers import AutoConfig

    archs = AutoConfig.from_pretrained(path).architectures or []
    for name in FAMILIES.names():
        if any(a.endswith(get_family(name).architecture_suffix) for a in archs):
            return name
    raise ConfigError(f"{path}: cannot tell the model family of architectures {archs} (no {SIDECAR}); "
                      "expected a sequence classifier, a seq2seq or a causal language model")


def _typed(schema: type, base: Dict[str, Any], overrides: List[str], key: str) -> Any:
    try:
        node = OmegaConf.merge(OmegaConf.structured(schema), base, OmegaConf.from_dotlist(overrides))
        OmegaConf.resolve(node)
        return node
    except OmegaConfBaseException as e:
        raise ConfigError(f"{key}: {str(e).splitlines()[0]}") from None


def _preset(task: str) -> Dict[str, Any]:
    """The ``dataset`` option file of ``task`` (its input length), as the run config has it."""
    from kdlab.cli import CONFIG_DIR

    f = Path(CONFIG_DIR) / "dataset" / f"{task}.yaml"
    return OmegaConf.to_container(OmegaConf.load(f)) if f.is_file() else {"name": task}


def parse(argv: Sequence[str], prog: str) -> Request:
    """``DIR [key=value ...] [--out DIR]``: keys ``dataset``, ``split``, ``batch_size``,
    ``dataset.*`` and ``hardware.*``."""
    args, out = list(argv), None
    if "--out" in args:
        i = args.index("--out")
        if i + 1 >= len(args):
            raise ConfigError("--out needs a directory")
        out = Path(args[i + 1])
        del args[i:i + 2]
    paths = [a for a in args if "=" not in a]
    if len(paths) != 1:
        raise ConfigError(f"usage: {prog} RUN_OR_MODEL_DIR [dataset=<task>] [split=<split>] [key=value ...] "
                          "[--out DIR]")
    kv = dict(a.split("=", 1) for a in args if "=" in a)
    unknown = [k for k in kv if k not in ("dataset", "split", "batch_size")
               and not k.startswith(("dataset.", "hardware."))]
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; valid keys: dataset, split, batch_size, dataset.<field>, "
                          "hardware.<field>")
    path = model_dir(paths[0])
    meta = read_sidecar(path)
    if "dataset" not in kv and meta is None:
        raise ConfigError(f"{path} has no {SIDECAR} naming its task: give dataset=<task>")
    task = get_task(kv.get("dataset") or meta["task"])
    base = _preset(task.name)
    if meta is not None and meta["task"] == task.name:  # the run's inputs and dev subsample
        base.update(meta["dataset"])
    base["name"] = task.name
    ds_over = [f"{k[len('dataset.'):]}={v}" for k, v in kv.items() if k.startswith("dataset.")]
    dataset = _typed(DatasetConfig, base, ds_over, "dataset")
    hw = [f"{k[len('hardware.'):]}={v}" for k, v in kv.items() if k.startswith("hardware.")]
    hardware = _typed(HardwareConfig, {}, hw, "hardware")
    try:
        batch_size = int(kv.get("batch_size", BATCH_SIZE))
    except ValueError:
        raise ConfigError(f"batch_size={kv['batch_size']!r} is not an integer") from None
    if kv.get("split"):
        task.split_file(kv["split"])  # an unknown split names the valid ones
    return Request(path, meta, family_of(path, meta), task, dataset, hardware, batch_size, out, kv.get("split"))


def check_head(req: Request) -> None:
    """A classifier's head must have the task's label count (before loading anything)."""
    if not get_family(req.family).class_logits:
        return
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(req.model_dir)
    if config.num_labels != req.task.num_labels:
        names = ", ".join(req.task.label_names) or "a score"
        raise ConfigError(f"{req.model_dir} has a classification head of {config.num_labels} label(s) but "
                          f"{req.task.name} has {req.task.num_labels} ({names}); give a task with "
                          f"{config.num_labels} label(s)")


def examples(req: Request, split: str) -> List[Any]:
    d, seed = req.dataset, (req.meta or {}).get("seed", 0)
    return load_split(req.task.name, split, data_dir=d.data_dir, max_samples=d.max_eval_samples, seed=seed,
                      stratified=d.stratified, on_bad_row=d.on_bad_row)


def load_model(req: Request) -> Any:
    """The saved model as a ``kdlab.models.Loaded``, through its family's loader."""
    family = get_family(req.family)
    loaded = family.load(str(req.model_dir), req.task.num_labels, key=str(req.model_dir))
    if not loaded.has_task_head:
        raise ConfigError(f"{req.model_dir} has no classification head: it was not trained on a task")
    return family, loaded


def evaluate(req: Request) -> Dict[str, Any]:
    """Score the model on the requested splits; returns the contents of ``eval.json``."""
    splits = [req.split] if req.split else list(req.task.eval_splits)
    for split in splits:
        if not req.task.split_file(split).labelled:
            raise ConfigError(f"{req.task.name} split {split!r} has no labels to score; "
                              "write its predictions with python -m kdlab.predict")
    check_head(req)
    data = {split: examples(req, split) for split in splits}  # data before the model
    family, loaded = load_model(req)
    encoded = {s: family.dataset(loaded.tokenizer, ex, req.task, req.dataset) for s, ex in data.items()}
    device = torch.device(req.hardware.device)
    metrics = split_metrics(family, req.task.name, loaded.model, encoded, req.batch_size, device,
                            req.hardware.precision)
    return {"model": str(req.model_dir), "task": req.task.name, "metric": req.task.metric, "splits": splits,
            "examples": {s: len(ex) for s, ex in data.items()}, "metrics": metrics,
            "dataset": OmegaConf.to_container(req.dataset), "device": str(device),
            "precision": req.hardware.precision}


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        req = parse(argv, "kdlab-eval")
        result = evaluate(req)
    except (ConfigError, DataError) as e:
        print(f"kdlab: error: {e}", file=sys.stderr)
        sys.exit(2)
    out = (req.out or req.model_dir) / EVAL_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)
    sizes = ", ".join(f"{s} {n}" for s, n in result["examples"].items())
    scores = "  ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
    print(f"{result['task']} ({sizes} examples)  {scores}")
    print(f"main metric {result['metric']}: {result['metrics'][result['metric']]:.4f}; written to {out}")


if __name__ == "__main__":
    main()
