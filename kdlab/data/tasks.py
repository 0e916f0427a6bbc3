"""Task specifications: what a GLUE / SuperGLUE task is, where its files live, how it is scored.

``TASKS`` maps ``"<benchmark>/<task>"`` (``"glue/sst2"``, ``"superglue/wic"``, ``"local/<name>"``)
to a ``TaskSpec``; the names are those of the ``dataset/`` config options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, List, Mapping, Optional, Tuple

from kdlab.data.examples import Example
from kdlab.data.readers import FileFormat, Labels, Row
from kdlab.errors import ConfigError
from kdlab.registry import Registry

TASKS: Registry = Registry("dataset")

KINDS = ("classification", "regression", "multiple_choice")


@dataclass(frozen=True)
class SplitFile:
    """The original-format file of one split, e.g. ``dev.tsv`` for GLUE ``validation``.

    ``on_hub`` False: the Hugging Face copy has no such split (GLUE's labelled
    ``diagnostic-full.tsv``), so it is read from a data dir only.
    """

    filename: str
    format: FileFormat
    labelled: bool = True
    on_hub: bool = True


@dataclass(frozen=True)
class TaskSpec:
    """One task.

    ``label_names`` are in the Hugging Face ``glue`` / ``super_glue`` order, so label ids
    agree across sources. ``metric`` is the main metric (model selection); ``metrics``
    all that ``compute_metrics`` returns. Original-format files live in
    ``<data_dir>/<benchmark>/<dirname>/``; the hub copy is ``hub_path`` / ``hub_config``.
    ``to_example`` turns a row (hub field names, label ids) into an ``Example``.
    ``train_task``: a diagnostic set (AX, AX-b, AX-g) has no training data of its own; its
    model is trained on this task (MNLI, RTE), whose ``train`` split ``load_split`` reads
    for it. The label sets are the same (checked at registration).
    """

    name: str
    benchmark: str
    dirname: str
    hub_path: str
    hub_config: str
    label_names: Tuple[str, ...]
    raw_labels: Optional[Mapping[Any, int]]
    metric: str
    metrics: Tuple[str, ...]
    splits: Mapping[str, SplitFile]
    eval_splits: Tuple[str, ...]
    to_example: Callable[[Row], Example]
    kind: str = "classification"
    train_task: Optional[str] = None
    description: str = ""
    # family -> the keys of a ``kdlab.data.prompts.Template`` (input, targets, choice): the
    # token families' templates of a task outside GLUE / SuperGLUE (theirs are in prompts.py)
    prompts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind
        assert self.metric in self.metrics, (self.name, self.metric)
        assert all(s in self.splits for s in self.eval_splits), self.name

    @property
    def num_labels(self) -> int:
        """Output size of a classifier head: 1 for regression, else the class count."""
        return 1 if self.is_regression else len(self.label_names)

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"

    @property
    def train_split(self) -> Optional[str]:
        """``"train"`` when the task can be trained: its own file or its ``train_task``'s."""
        return "train" if "train" in self.splits or self.train_task else None

    def labels(self, split: str) -> Labels:
        return Labels(raw=self.raw_labels, required=self.split_file(split).labelled)

    def split_file(self, split: str) -> SplitFile:
        try:
            return self.splits[split]
        except KeyError:
            raise ConfigError(
                f"{self.name} has no split {split!r}. Valid splits: {', '.join(self.splits)}."
            ) from None


def register(spec: TaskSpec) -> TaskSpec:
    if spec.train_task is not None:
        # the model trained on train_task is scored on spec's labels: the ids must agree
        assert "train" not in spec.splits, spec.name
        trained = get_task(spec.train_task)
        assert trained.label_names == spec.label_names, (spec.name, trained.name)
    TASKS.register(spec.name)(spec)
    return spec


def get_task(name: str) -> TaskSpec:
    """The task registered as ``name``; an unknown name raises ConfigError listing the valid ones."""
    return TASKS.get(name)


def task_names() -> List[str]:
    return TASKS.names()
