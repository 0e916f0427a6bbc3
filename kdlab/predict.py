"""``kdlab-predict``: GLUE / SuperGLUE leaderboard submission files for a saved model.

    python -m kdlab.predict RUN_OR_MODEL_DIR [dataset=glue/mnli] [--out DIR] [key=value ...]

Predicts the task's test split(s) (files without labels) and writes one file per
benchmark entry, named as the benchmark's server expects, into ``--out`` (default
``<model dir>/submission``):

* GLUE: ``CoLA.tsv``, ``SST-2.tsv``, ``MRPC.tsv``, ``QQP.tsv``, ``STS-B.tsv``,
  ``MNLI-m.tsv`` and ``MNLI-mm.tsv`` (``dataset=glue/mnli``), ``QNLI.tsv``, ``RTE.tsv``,
  ``WNLI.tsv``, ``AX.tsv`` (``dataset=glue/ax`` with an MNLI model): a header
  ``index<TAB>prediction``, then one row per test example; labels as 0/1 for the binary
  tasks, label names for the NLI tasks, a score for STS-B.
* SuperGLUE: ``BoolQ.jsonl``, ``CB.jsonl``, ``COPA.jsonl``, ``MultiRC.jsonl``,
  ``ReCoRD.jsonl``, ``RTE.jsonl``, ``WiC.jsonl``, ``WSC.jsonl``, ``AX-b.jsonl``,
  ``AX-g.jsonl``: ``{"idx": ..., "label": ...}`` per line with the benchmark's label
  strings (``true``/``false`` for BoolQ and WiC, ``True``/``False`` for WSC, 0/1 for COPA,
  the entity for ReCoRD); MultiRC nests answers in questions in passages.

Every test file is read before the model is loaded: a missing one is one error line
naming it. Keys are those of ``kdlab.evaluate``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from kdlab.batching import loader
from kdlab.errors import ConfigError, DataError
from kdlab.evaluate import Request, check_head, examples, load_model, parse

SUBMISSION_DIR = "submission"
# (task, split) -> file name, as the GLUE / SuperGLUE servers expect
FILES = {
    ("glue/cola", "test"): "CoLA.tsv", ("glue/sst2", "test"): "SST-2.tsv", ("glue/mrpc", "test"): "MRPC.tsv",
    ("glue/qqp", "test"): "QQP.tsv", ("glue/stsb", "test"): "STS-B.tsv",
    ("glue/mnli", "test_matched"): "MNLI-m.tsv", ("glue/mnli", "test_mismatched"): "MNLI-mm.tsv",
    ("glue/qnli", "test"): "QNLI.tsv", ("glue/rte", "test"): "RTE.tsv", ("glue/wnli", "test"): "WNLI.tsv",
    ("glue/ax", "test"): "AX.tsv",
    ("superglue/boolq", "test"): "BoolQ.jsonl", ("superglue/cb", "test"): "CB.jsonl",
    ("superglue/copa", "test"): "COPA.jsonl", ("superglue/multirc", "test"): "MultiRC.jsonl",
    ("superglue/record", "test"): "ReCoRD.jsonl", ("superglue/rte", "test"): "RTE.jsonl",
    ("superglue/wic", "test"): "WiC.jsonl", ("superglue/wsc", "test"): "WSC.jsonl",
    ("superglue/axb", "test"): "AX-b.jsonl", ("superglue/axg", "test"): "AX-g.jsonl",
}
GLUE_IDS = ("glue/cola", "glue/sst2", "glue/mrpc", "glue/qqp", "glue/wnli")  # labels written as 0 / 1
LOWER = ("superglue/boolq", "superglue/wic")  # "true" / "false"
CHOICE_IDS = ("superglue/copa",)  # the index of the chosen alternative


def label(task: Any, pred: Any, ex: Any) -> Any:
    """One prediction in the form the benchmark's server reads."""
    name = task.name
    if task.is_regression:
        return round(min(max(float(pred), 0.0), 5.0), 3)  # STS-B scores lie in [0, 5]
    if name in GLUE_IDS or name in CHOICE_IDS or name == "superglue/multirc":
        return int(pred)
    if name == "superglue/record":
        return ex.choices[int(pred)]
    text = task.label_names[int(pred)]
    return text.lower() if name in LOWER else text


def multirc_lines(preds: Sequence[Any], exs: Sequence[Any]) -> List[Dict[str, Any]]:
    """MultiRC's nesting: passages > questions > answers, in file order."""
    passages: Dict[int, Dict[int, List[Dict[str, int]]]] = {}  # insertion-ordered
    for p, ex in zip(preds, exs, strict=True):
        passage, question = ex.group
        passages.setdefault(passage, {}).setdefault(question, []).append(
            {"idx": ex.idx, "label": int(p)})
    return [{"idx": p, "passage": {"questions": [{"idx": q, "answers": a} for q, a in qs.items()]}}
            for p, qs in passages.items()]


def render(task: Any, preds: Sequence[Any], exs: Sequence[Any]) -> str:
    if task.benchmark == "glue":
        rows = ["index\tprediction"] + [f"{ex.idx}\t{label(task, p, ex)}" for p, ex in zip(preds, exs, strict=True)]
        return "\n".join(rows) + "\n"
    if task.name == "superglue/multirc":
        lines = multirc_lines(preds, exs)
    else:
        lines = [{"idx": ex.idx, "label": label(task, p, ex)} for p, ex in zip(preds, exs, strict=True)]
    return "".join(json.dumps(line) + "\n" for line in lines)


def test_splits(req: Request) -> List[str]:
    splits = [s for s in req.task.splits if (req.task.name, s) in FILES]
    if not splits:
        raise ConfigError(f"{req.task.name} has no leaderboard test split")
    return splits


def predict(req: Request, out_dir: Path) -> Dict[str, Path]:
    """Write the submission file of each test split; returns ``{split: file}``."""
    splits = test_splits(req)
    check_head(req)
    d = req.dataset
    d.max_eval_samples = None  # a submission predicts every test example
    data = {s: examples(req, s) for s in splits}  # every test file before the model
    family, loaded = load_model(req)
    device = torch.device(req.hardware.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: Dict[str, Path] = {}
    for split, exs in data.items():
        ds = family.dataset(loaded.tokenizer, exs, req.task, d)
        preds = family.predictions(loaded.model, loader(ds, req.batch_size), device, req.hardware.precision)
        path = out_dir / FILES[(req.task.name, split)]
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(render(req.task, preds.tolist(), exs))
        os.replace(tmp, path)
        written[split] = path
    return written


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        req = parse(argv, "kdlab-predict")
        written = predict(req, req.out or req.model_dir / SUBMISSION_DIR)
    except (ConfigError, DataError) as e:
        print(f"kdlab: error: {e}", file=sys.stderr)
        sys.exit(2)
    for split, path in written.items():
        print(f"{req.task.name} {split}: {path}")


if __name__ == "__main__":
    main()
