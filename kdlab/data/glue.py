"""The GLUE tasks (Wang et al., 2019), read from the TSV files as distributed.

Files: ``<data_dir>/glue/<DIR>/{train,dev,test}.tsv`` (MNLI: ``dev_matched.tsv``,
``dev_mismatched.tsv``, ``test_matched.tsv``, ``test_mismatched.tsv``; the diagnostic
set: ``diagnostic/diagnostic.tsv`` unlabelled, ``diagnostic/diagnostic-full.tsv``
labelled). Columns are read by header name; CoLA's train and dev files have no header.
Field names and label orders are those of the Hugging Face ``glue`` dataset.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from kdlab.data.examples import Example
from kdlab.data.readers import Row, TsvFormat
from kdlab.data.tasks import SplitFile, TaskSpec, register

HUB_PATH = "nyu-mll/glue"
BINARY = {"0": 0, "1": 1}
NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")


def pair(a: str, b: Optional[str]):
    """Converter of a row with text field ``a`` (and ``b``) into an Example."""

    def to_example(row: Row) -> Example:
        return Example(
            text_a=row[a],
            text_b=row[b] if b else None,
            label=row["label"],
            idx=int(row["idx"]),
        )

    return to_example


def splits(
    fields: Mapping[str, str],
    label: str,
    files: Sequence[Tuple[str, str]] = (("train", "train.tsv"), ("validation", "dev.tsv")),
    tests: Sequence[Tuple[str, str]] = (("test", "test.tsv"),),
) -> Dict[str, SplitFile]:
    """Split -> file for a task whose test files have the same text columns and no label."""
    out = {s: SplitFile(f, TsvFormat(fields=fields, label=label)) for s, f in files}
    for s, f in tests:
        out[s] = SplitFile(f, TsvFormat(fields=fields, label=None), labelled=False)
    return out


def glue(
    task: str,
    dirname: str,
    hub_config: str,
    label_names: Sequence[str],
    raw_labels: Optional[Mapping[Any, int]],
    metric: str,
    metrics: Sequence[str],
    split_files: Dict[str, SplitFile],
    text: Tuple[str, Optional[str]],
    description: str,
    eval_splits: Sequence[str] = ("validation",),
    kind: str = "classification",
    train_task: Optional[str] = None,
) -> TaskSpec:
    return register(
        TaskSpec(
            name=f"glue/{task}",
            benchmark="glue",
            dirname=dirname,
            hub_path=HUB_PATH,
            hub_config=hub_config,
            label_names=tuple(label_names),
            raw_labels=raw_labels,
            metric=metric,
            metrics=tuple(metrics),
            splits=split_files,
            eval_splits=tuple(eval_splits),
            to_example=pair(*text),
            kind=kind,
            train_task=train_task,
            description=description,
        )
    )


def by_name(labels: Sequence[str]) -> Dict[str, int]:
    return {n: i for i, n in enumerate(labels)}


COLA_COLUMNS = ("source", "label", "original_label", "sentence")
glue(
    "cola", "CoLA", "cola", ("unacceptable", "acceptable"), BINARY,
    "matthews_correlation", ("matthews_correlation", "accuracy"),
    {
        "train": SplitFile("train.tsv", TsvFormat({"sentence": "sentence"}, "label", header=False, names=COLA_COLUMNS)),
        "validation": SplitFile("dev.tsv", TsvFormat({"sentence": "sentence"}, "label", header=False, names=COLA_COLUMNS)),
        "test": SplitFile("test.tsv", TsvFormat({"sentence": "sentence"}, None), labelled=False),
    },
    ("sentence", None),
    "CoLA: grammatical acceptability of one sentence; Matthews correlation.",
)  # fmt: skip
glue(
    "sst2", "SST-2", "sst2", ("negative", "positive"), BINARY, "accuracy", ("accuracy",),
    splits({"sentence": "sentence"}, "label"), ("sentence", None),
    "SST-2: sentiment of one sentence; accuracy.",
)  # fmt: skip
glue(
    "mrpc", "MRPC", "mrpc", ("not_equivalent", "equivalent"), BINARY, "f1", ("f1", "accuracy"),
    splits({"sentence1": "#1 String", "sentence2": "#2 String"}, "Quality"), ("sentence1", "sentence2"),
    "MRPC: are two sentences paraphrases; F1 and accuracy.",
)  # fmt: skip
glue(
    "qqp", "QQP", "qqp", ("not_duplicate", "duplicate"), BINARY, "f1", ("f1", "accuracy"),
    splits({"question1": "question1", "question2": "question2"}, "is_duplicate"),
    ("question1", "question2"),
    "QQP: are two Quora questions duplicates; F1 and accuracy.",
)  # fmt: skip
glue(
    "stsb", "STS-B", "stsb", (), None, "spearmanr", ("pearson", "spearmanr"),
    splits({"sentence1": "sentence1", "sentence2": "sentence2"}, "score"), ("sentence1", "sentence2"),
    "STS-B: similarity score of two sentences in [0, 5]; Pearson and Spearman correlation.",
    kind="regression",
)  # fmt: skip
glue(
    "mnli", "MNLI", "mnli", NLI3, by_name(NLI3), "accuracy", ("accuracy",),
    splits(
        {"premise": "sentence1", "hypothesis": "sentence2"}, "gold_label",
        files=(("train", "train.tsv"), ("validation_matched", "dev_matched.tsv"),
               ("validation_mismatched", "dev_mismatched.tsv")),
        tests=(("test_matched", "test_matched.tsv"), ("test_mismatched", "test_mismatched.tsv")),
    ),
    ("premise", "hypothesis"),
    "MNLI: entailment, neutral or contradiction; accuracy on the matched and mismatched dev sets.",
    eval_splits=("validation_matched", "validation_mismatched"),
)  # fmt: skip
glue(
    "qnli", "QNLI", "qnli", NLI2, by_name(NLI2), "accuracy", ("accuracy",),
    splits({"question": "question", "sentence": "sentence"}, "label"), ("question", "sentence"),
    "QNLI: does the sentence answer the question; accuracy.",
)  # fmt: skip
glue(
    "rte", "RTE", "rte", NLI2, by_name(NLI2), "accuracy", ("accuracy",),
    splits({"sentence1": "sentence1", "sentence2": "sentence2"}, "label"), ("sentence1", "sentence2"),
    "RTE: does the first sentence entail the second; accuracy.",
)  # fmt: skip
glue(
    "wnli", "WNLI", "wnli", ("not_entailment", "entailment"), BINARY, "accuracy", ("accuracy",),
    splits({"sentence1": "sentence1", "sentence2": "sentence2"}, "label"), ("sentence1", "sentence2"),
    "WNLI: Winograd schemas as sentence-pair entailment; accuracy.",
)  # fmt: skip
glue(
    "ax", "diagnostic", "ax", NLI3, by_name(NLI3), "matthews_correlation",
    ("matthews_correlation", "accuracy"),
    {
        # The labelled diagnostic-full.tsv is not on the hub; "test" is what the hub serves.
        "validation": SplitFile("diagnostic-full.tsv", TsvFormat({"premise": "Premise", "hypothesis": "Hypothesis"}, "Label"),
                                on_hub=False),
        "test": SplitFile("diagnostic.tsv", TsvFormat({"premise": "sentence1", "hypothesis": "sentence2"}, None), labelled=False),
    },
    ("premise", "hypothesis"),
    "AX: the GLUE diagnostic set, evaluated with an MNLI model; Matthews correlation (R3).",
    train_task="glue/mnli",
)  # fmt: skip
