"""The SuperGLUE tasks (Wang et al., 2019), read from the JSON-lines files as distributed.

Files: ``<data_dir>/superglue/<Task>/{train,val,test}.jsonl``; the diagnostics
``AX-b/AX-b.jsonl`` and ``AX-g/AX-g.jsonl`` (test only). MultiRC nests questions and
answer options in each passage, ReCoRD queries in each passage; both are flattened into
one row per answer option / query, with the field names and label ids of the Hugging
Face ``super_glue`` dataset.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from kdlab.data.examples import NO_LABEL, Example
from kdlab.data.readers import BadRow, JsonlFormat, Labels, Row
from kdlab.data.tasks import SplitFile, TaskSpec, register

HUB_PATH = "aps/super_glue"
BOOL = {False: 0, True: 1}
BINARY = {0: 0, 1: 1}
NLI2 = ("entailment", "not_entailment")


def _label(obj: Dict[str, Any], labels: Labels) -> Any:
    return labels.parse(obj["label"]) if "label" in obj else labels.missing()


def flat(
    fields: Sequence[str], nested: Optional[str] = None
) -> Callable[[Dict[str, Any], Labels], List[Row]]:
    """One row per line: ``fields`` (looked up in ``obj[nested]`` first, e.g. WSC's target)."""

    def to_rows(obj: Dict[str, Any], labels: Labels) -> List[Row]:
        src = {**obj, **obj[nested]} if nested else obj
        row = {f: src[f] for f in fields}
        row["idx"] = int(obj["idx"])
        row["label"] = _label(obj, labels)
        return [row]

    return to_rows


def multirc_rows(obj: Dict[str, Any], labels: Labels) -> List[Row]:
    passage = obj["passage"]
    rows = []
    for q in passage["questions"]:
        for a in q["answers"]:
            rows.append(
                {
                    "paragraph": passage["text"],
                    "question": q["question"],
                    "answer": a["text"],
                    "label": _label(a, labels),
                    "idx": {"paragraph": obj["idx"], "question": q["idx"], "answer": a["idx"]},
                }
            )
    return rows


def record_rows(obj: Dict[str, Any], labels: Labels) -> List[Row]:
    passage = obj["passage"]
    text = passage["text"]
    # entity offsets are inclusive of the last character
    entities = sorted({text[e["start"] : e["end"] + 1] for e in passage["entities"]})
    rows = []
    for qa in obj["qas"]:
        answers = sorted({a["text"] for a in qa.get("answers", [])})
        if labels.required and not answers:
            raise BadRow(f"query idx={qa['idx']} has no answers (this split must be labelled)")
        rows.append(
            {
                "passage": text,
                "query": qa["query"],
                "entities": entities,
                "answers": answers,
                "idx": {"passage": obj["idx"], "query": qa["idx"]},
            }
        )
    return rows


# ------------------------------------------------------------------ row -> Example


def pair(a: str, b: str, extra: Sequence[str] = ()) -> Callable[[Row], Example]:
    def to_example(row: Row) -> Example:
        return Example(
            row[a], row[b], row["label"], int(row["idx"]), fields={f: row[f] for f in extra}
        )

    return to_example


def copa_example(row: Row) -> Example:
    # "cause": which alternative is the cause of the premise; "effect": its effect.
    choices = [row["choice1"], row["choice2"]]
    ask = "What was the cause?" if row["question"] == "cause" else "What happened as a result?"
    return Example(
        text_a=row["premise"],
        text_b=f"{ask} {choices[0]} Or {choices[1]}",
        label=row["label"],
        idx=int(row["idx"]),
        choices=choices,
        fields={"premise": row["premise"], "question": row["question"]},
    )


def multirc_example(row: Row) -> Example:
    idx = row["idx"]
    return Example(
        text_a=row["paragraph"],
        text_b=f"{row['question']} {row['answer']}",
        label=row["label"],
        idx=int(idx["answer"]),
        group=(int(idx["paragraph"]), int(idx["question"])),
        fields={"question": row["question"], "answer": row["answer"]},
    )


def record_example(row: Row) -> Example:
    # Newer hub copies already replace the highlight markers; doing it here makes every
    # source give the same passage.
    passage = row["passage"].replace("@highlight\n", "- ")
    choices, answers = list(row["entities"]), list(row["answers"])
    gold = [i for i, c in enumerate(choices) if c in set(answers)]
    return Example(
        text_a=passage,
        text_b=row["query"],
        label=gold[0] if gold else NO_LABEL,
        idx=int(row["idx"]["query"]),
        choices=choices,
        answers=answers,
        fields={"passage": passage, "query": row["query"]},
    )


def wic_example(row: Row) -> Example:
    # The target word leads the first segment: without it a sentence-pair classifier
    # cannot know which word to compare.
    keys = ("word", "sentence1", "sentence2", "start1", "end1", "start2", "end2")
    return Example(
        text_a=f"{row['word']}: {row['sentence1']}",
        text_b=row["sentence2"],
        label=row["label"],
        idx=int(row["idx"]),
        fields={k: row[k] for k in keys},
    )


def wsc_example(row: Row) -> Example:
    keys = ("text", "span1_index", "span1_text", "span2_index", "span2_text")
    return Example(
        text_a=row["text"],
        text_b=f'Does "{row["span2_text"]}" refer to "{row["span1_text"]}"?',
        label=row["label"],
        idx=int(row["idx"]),
        fields={k: row[k] for k in keys},
    )


def axg_example(row: Row) -> Example:
    ex = pair("premise", "hypothesis")(row)
    # pair_id (original files only; the hub copy drops it) ties the two gendered variants
    ex.group = row.get("pair_id")
    return ex


# ------------------------------------------------------------------ specs

STANDARD = (
    ("train", "train.jsonl", True),
    ("validation", "val.jsonl", True),
    ("test", "test.jsonl", False),
)


def superglue(
    task: str,
    dirname: str,
    hub_config: str,
    label_names: Sequence[str],
    raw_labels: Optional[Mapping[Any, int]],
    metric: str,
    metrics: Sequence[str],
    to_rows: Callable[[Dict[str, Any], Labels], List[Row]],
    expected: str,
    to_example: Callable[[Row], Example],
    description: str,
    files: Sequence = STANDARD,
    kind: str = "classification",
    train_task: Optional[str] = None,
) -> TaskSpec:
    fmt = JsonlFormat(to_rows, expected=f"one JSON object per line with {expected}")
    return register(
        TaskSpec(
            name=f"superglue/{task}",
            benchmark="superglue",
            dirname=dirname,
            hub_path=HUB_PATH,
            hub_config=hub_config,
            label_names=tuple(label_names),
            raw_labels=raw_labels,
            metric=metric,
            metrics=tuple(metrics),
            splits={s: SplitFile(f, fmt, labelled) for s, f, labelled in files},
            eval_splits=tuple(s for s, _, labelled in files if labelled and s != "train"),
            to_example=to_example,
            kind=kind,
            train_task=train_task,
            description=description,
        )
    )


superglue(
    "boolq", "BoolQ", "boolq", ("False", "True"), BOOL, "accuracy", ("accuracy",),
    flat(("question", "passage")), '"question", "passage", "idx" and a true/false "label"',
    pair("question", "passage"),
    "BoolQ: yes/no question about a passage; accuracy.",
)  # fmt: skip
superglue(
    "cb", "CB", "cb", ("entailment", "contradiction", "neutral"),
    {"entailment": 0, "contradiction": 1, "neutral": 2}, "f1_macro", ("f1_macro", "accuracy"),
    flat(("premise", "hypothesis")),
    '"premise", "hypothesis", "idx" and "label" (entailment, contradiction or neutral)',
    pair("premise", "hypothesis"),
    "CB: three-way entailment of an embedded clause; macro-F1 and accuracy.",
)  # fmt: skip
superglue(
    "copa", "COPA", "copa", ("choice1", "choice2"), BINARY, "accuracy", ("accuracy",),
    flat(("premise", "choice1", "choice2", "question")),
    '"premise", "choice1", "choice2", "question" (cause or effect), "idx" and "label" (0 or 1)',
    copa_example,
    "COPA: the more plausible cause or effect of a premise, of two; accuracy.",
    kind="multiple_choice",
)  # fmt: skip
superglue(
    "multirc", "MultiRC", "multirc", ("False", "True"), BINARY, "f1a", ("f1a", "exact_match"),
    multirc_rows,
    '"idx" and "passage": {"text", "questions": [{"question", "idx", "answers": '
    '[{"text", "idx", "label" (0 or 1)}]}]}',
    multirc_example,
    "MultiRC: is each answer option of a question about a paragraph true; F1a and EM.",
)  # fmt: skip
superglue(
    "record", "ReCoRD", "record", (), None, "f1", ("f1", "exact_match"),
    record_rows,
    '"idx", "passage": {"text", "entities": [{"start", "end"}]} and "qas": '
    '[{"query" (with @placeholder), "idx", "answers": [{"start", "end", "text"}]}]',
    record_example,
    "ReCoRD: the passage entity filling a cloze query; token F1 and EM (max over answers).",
    kind="multiple_choice",
)  # fmt: skip
superglue(
    "rte", "RTE", "rte", NLI2, {n: i for i, n in enumerate(NLI2)}, "accuracy", ("accuracy",),
    flat(("premise", "hypothesis")),
    '"premise", "hypothesis", "idx" and "label" (entailment or not_entailment)',
    pair("premise", "hypothesis"),
    "RTE: does the premise entail the hypothesis; accuracy.",
)  # fmt: skip
superglue(
    "wic", "WiC", "wic", ("False", "True"), BOOL, "accuracy", ("accuracy",),
    flat(("word", "sentence1", "sentence2", "start1", "start2", "end1", "end2")),
    '"word", "sentence1", "sentence2", "start1", "end1", "start2", "end2", "idx" and a true/false "label"',
    wic_example,
    "WiC: is the word used with the same sense in both sentences; accuracy.",
)  # fmt: skip
superglue(
    "wsc", "WSC", "wsc", ("False", "True"), BOOL, "accuracy", ("accuracy",),
    flat(("text", "span1_index", "span2_index", "span1_text", "span2_text"), nested="target"),
    '"text", "target": {"span1_index", "span1_text", "span2_index", "span2_text"}, "idx" '
    'and a true/false "label"',
    wsc_example,
    "WSC: does the pronoun (span 2) refer to the noun phrase (span 1); accuracy.",
)  # fmt: skip
superglue(
    "axb", "AX-b", "axb", NLI2, {n: i for i, n in enumerate(NLI2)}, "matthews_correlation",
    ("matthews_correlation", "accuracy"),
    flat(("sentence1", "sentence2")),
    '"sentence1", "sentence2", "idx" and "label" (entailment or not_entailment)',
    pair("sentence1", "sentence2"),
    "AX-b: broad-coverage diagnostic, evaluated with an RTE model; Matthews correlation.",
    files=(("test", "AX-b.jsonl", True),), train_task="superglue/rte",
)  # fmt: skip


def axg_rows(obj: Dict[str, Any], labels: Labels) -> List[Row]:
    rows = flat(("premise", "hypothesis"))(obj, labels)
    rows[0]["pair_id"] = obj.get("pair_id")
    return rows


superglue(
    "axg", "AX-g", "axg", NLI2, {n: i for i, n in enumerate(NLI2)}, "accuracy",
    ("accuracy", "gender_parity"),
    axg_rows,
    '"premise", "hypothesis", "idx", "pair_id" and "label" (entailment or not_entailment)',
    axg_example,
    "AX-g: Winogender diagnostic, evaluated with an RTE model; accuracy and gender parity.",
    files=(("test", "AX-g.jsonl", True),), train_task="superglue/rte",
)  # fmt: skip
