"""Tasks read from local files: one module per task in this folder, discovered (no import
list to edit), plus its option ``kdlab/configs/dataset/local/<name>.yaml``.

A module calls ``tsv_task`` once; the files live in ``<data_dir>/local/<name>/`` (``data_dir``
is ``dataset.data_dir`` or ``KDLAB_DATA_DIR``), one TSV per split with a header row naming
the columns, as GLUE's. They are never looked for on the hub. See docs/extending.md.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

from kdlab.data.glue import by_name, pair
from kdlab.data.readers import TsvFormat
from kdlab.data.tasks import SplitFile, TaskSpec, register
from kdlab.registry import discover

BENCHMARK = "local"


def tsv_task(
    name: str,
    label_names: Sequence[str],
    text: Tuple[str, Optional[str]] = ("sentence", None),
    label_column: str = "label",
    files: Mapping[str, str] = {"train": "train.tsv", "validation": "dev.tsv"},  # noqa: B006 (read only)
    metric: str = "accuracy",
    metrics: Sequence[str] = ("accuracy",),
    prompts: Optional[Mapping[str, Mapping[str, object]]] = None,
    description: str = "",
) -> TaskSpec:
    """Register ``local/<name>``: a classification task of one or two texts.

    ``text``: the column of the first text and of the second one (None for single
    sentences); ``label_column`` holds the label names of ``label_names`` (their order is
    the label ids). ``files``: split -> file name; the splits other than ``train`` are
    evaluated. ``metrics``: names of ``kdlab.data.metrics`` (the main one first).
    ``prompts``: the seq2seq / causal families' templates, ``{"seq2seq": {"input": "...
    {text_a}", "targets": [...]}}`` (see ``kdlab.data.prompts.Template``); without one a
    token family refuses the task.
    """
    fields: Dict[str, str] = {"text_a": text[0], **({"text_b": text[1]} if text[1] else {})}
    fmt = TsvFormat(fields=fields, label=label_column)
    splits = {split: SplitFile(filename, fmt, on_hub=False) for split, filename in files.items()}
    return register(TaskSpec(
        name=f"{BENCHMARK}/{name}", benchmark=BENCHMARK, dirname=name, hub_path="", hub_config=name,
        label_names=tuple(label_names), raw_labels=by_name(label_names), metric=metric, metrics=tuple(metrics),
        splits=splits, eval_splits=tuple(s for s in files if s != "train"),
        to_example=pair("text_a", "text_b" if text[1] else None), description=description,
        prompts={family: dict(t) for family, t in (prompts or {}).items()},
    ))


discover(__name__)  # every task module of this folder
