"""Small files in each task's original format, written from the public format descriptions.

``SAMPLES[task][relative path] = file text``; ``EXPECTED[task][split] = (rows, labels)``.
"""

from __future__ import annotations

import json

from kdlab.data import get_task, task_names

T = "\t"
# The GLUE / SuperGLUE tasks, which have samples and templates here; tasks of local files
# (kdlab/data/local/) are added without editing these tests.
BENCHMARK_TASKS = [t for t in task_names() if get_task(t).benchmark in ("glue", "superglue")]


def tsv(*rows):
    return "".join(T.join(str(c) for c in r) + "\n" for r in rows)


def jsonl(*objs):
    return "".join(json.dumps(o) + "\n" for o in objs)


MNLI_TRAIN = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]  # fmt: skip
MNLI_DEV = MNLI_TRAIN[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]
STSB = [
    "index",
    "genre",
    "filename",
    "year",
    "old_index",
    "source1",
    "source2",
    "sentence1",
    "sentence2",
    "score",
]
AX_FULL = ["Lexical Semantics", "Predicate-Argument Structure", "Logic", "Knowledge", "Domain",
           "Premise", "Hypothesis", "Label"]  # fmt: skip


def mnli_row(i, a, b, gold, dev=False):
    # label1 (, label2..label5 in dev), gold_label
    return [i, 1, f"{i}e", "fiction", "( a )", "( b )", "(ROOT a)", "(ROOT b)", a, b, gold] + [
        gold
    ] * (5 if dev else 1)


MULTIRC = {
    "idx": 0,
    "version": 1.1,
    "passage": {
        "text": "Sent 1: Tom has a red ball.<br>Sent 2: He gave it to Ann.",
        "questions": [
            {"question": "What color is the ball?", "idx": 0,
             "answers": [{"text": "Red", "idx": 0, "label": 1}, {"text": "Blue", "idx": 1, "label": 0}]},
            {"question": "Who got the ball?", "idx": 1,
             "answers": [{"text": "Ann", "idx": 2, "label": 1}, {"text": "Tom", "idx": 3, "label": 0},
                         {"text": "Annie's friend Ann", "idx": 4, "label": 1}]},
        ],
    },
}  # fmt: skip
RECORD_TEXT = "Obama met Merkel in Berlin.\n@highlight\nMerkel hosted Obama"
RECORD = {
    "source": "Daily mail",
    "idx": 7,
    "passage": {
        "text": RECORD_TEXT,
        # offsets include the last character: "Obama" is 0..4
        "entities": [{"start": 0, "end": 4}, {"start": 10, "end": 15}, {"start": 20, "end": 25},
                     {"start": 39, "end": 44}, {"start": 53, "end": 57}],
    },
    "qas": [
        {"query": "@placeholder is the German chancellor.", "idx": 70,
         "answers": [{"start": 10, "end": 15, "text": "Merkel"}, {"start": 39, "end": 44, "text": "Merkel"}]},
        {"query": "The meeting took place in @placeholder.", "idx": 71,
         "answers": [{"start": 20, "end": 25, "text": "Berlin"}]},
    ],
}  # fmt: skip

SAMPLES = {
    "glue/cola": {
        "glue/CoLA/train.tsv": tsv(
            ["gj04", 1, "", "The book was read."], ["gj04", 0, "*", "Book the read was."]
        ),
        "glue/CoLA/dev.tsv": tsv(["gj04", 0, "*", "Was read book the."]),
        "glue/CoLA/test.tsv": tsv(["index", "sentence"], [0, "A test sentence."]),
    },
    "glue/sst2": {
        "glue/SST-2/train.tsv": tsv(["sentence", "label"], ["a great film ", 1], ["dull ", 0]),
        "glue/SST-2/dev.tsv": tsv(["sentence", "label"], ["fine", 1]),
        "glue/SST-2/test.tsv": tsv(["index", "sentence"], [0, "unseen"]),
    },
    "glue/mrpc": {
        "glue/MRPC/train.tsv": "\ufeff"
        + tsv(
            ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
            [1, 11, 12, 'He said "yes.', "He agreed."],
            [0, 13, 14, "A b.", "C d."],
        ),  # fmt: skip
        "glue/MRPC/dev.tsv": tsv(
            ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], [0, 1, 2, "x", "y"]
        ),
    },
    "glue/qqp": {
        "glue/QQP/train.tsv": tsv(
            ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            [0, 1, 2, "How to cook?", "How do I cook?", 1],
            [1, 3, 4, "Why?", "Who?", 0],
        ),  # fmt: skip
        "glue/QQP/dev.tsv": tsv(
            ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            [5, 6, 7, "a?", "b?", 0],
        ),
        "glue/QQP/test.tsv": tsv(["id", "question1", "question2"], [0, "c?", "d?"]),
    },
    "glue/stsb": {
        "glue/STS-B/train.tsv": tsv(
            STSB,
            [
                0,
                "main-captions",
                "MSRvid",
                "2012test",
                "0001",
                "none",
                "none",
                "A cat.",
                "A cat sits.",
                "4.200",
            ],
        ),  # fmt: skip
        "glue/STS-B/dev.tsv": tsv(
            STSB,
            [0, "main-news", "MSRpar", "2012test", "0002", "none", "none", "X.", "Y.", "0.000"],
        ),  # fmt: skip
    },
    "glue/mnli": {
        "glue/MNLI/train.tsv": tsv(
            MNLI_TRAIN,
            mnli_row(0, "A man sleeps.", "A man rests.", "entailment"),
            mnli_row(1, "A dog runs.", "A cat runs.", "contradiction"),
            mnli_row(2, "It rains.", "It is cold.", "neutral"),
        ),  # fmt: skip
        "glue/MNLI/dev_matched.tsv": tsv(MNLI_DEV, mnli_row(0, "P.", "H.", "neutral", dev=True)),
        "glue/MNLI/dev_mismatched.tsv": tsv(
            MNLI_DEV, mnli_row(0, "P2.", "H2.", "contradiction", dev=True)
        ),
        "glue/MNLI/test_matched.tsv": tsv(MNLI_TRAIN[:10], mnli_row(0, "P3.", "H3.", "")[:10]),
    },
    "glue/qnli": {
        "glue/QNLI/train.tsv": tsv(
            ["index", "question", "sentence", "label"],
            [0, "Who?", "Ann did.", "entailment"],
            [1, "When?", "It is red.", "not_entailment"],
        ),  # fmt: skip
        "glue/QNLI/dev.tsv": tsv(
            ["index", "question", "sentence", "label"], [0, "Q?", "S.", "not_entailment"]
        ),
    },
    "glue/rte": {
        "glue/RTE/train.tsv": tsv(
            ["index", "sentence1", "sentence2", "label"], [0, "A b c.", "A b.", "entailment"]
        ),
        "glue/RTE/dev.tsv": tsv(
            ["index", "sentence1", "sentence2", "label"], [0, "A.", "B.", "not_entailment"]
        ),
    },
    "glue/wnli": {
        "glue/WNLI/train.tsv": tsv(
            ["index", "sentence1", "sentence2", "label"], [0, "S1.", "S2.", 1], [1, "S3.", "S4.", 0]
        ),
        "glue/WNLI/dev.tsv": tsv(
            ["index", "sentence1", "sentence2", "label"], [0, "S5.", "S6.", 0]
        ),
    },
    "glue/ax": {
        "glue/diagnostic/diagnostic-full.tsv": tsv(
            AX_FULL,
            ["Negation", "", "", "", "Artificial", "P.", "H.", "contradiction"],
            ["", "", "", "", "News", "P2.", "H2.", "entailment"],
        ),  # fmt: skip
        "glue/diagnostic/diagnostic.tsv": tsv(["index", "sentence1", "sentence2"], [0, "P.", "H."]),
    },
    "superglue/boolq": {
        "superglue/BoolQ/train.jsonl": jsonl(
            {"question": "is it", "passage": "It is.", "idx": 0, "label": True},
            {"question": "is it not", "passage": "No.", "idx": 1, "label": False},
        ),  # fmt: skip
        "superglue/BoolQ/val.jsonl": jsonl(
            {"question": "q", "passage": "p", "idx": 0, "label": False}
        ),
        "superglue/BoolQ/test.jsonl": jsonl({"question": "q", "passage": "p", "idx": 0}),
    },
    "superglue/cb": {
        "superglue/CB/train.jsonl": jsonl(
            {"premise": "P", "hypothesis": "H", "label": "neutral", "idx": 0},
            {"premise": "P", "hypothesis": "H", "label": "contradiction", "idx": 1},
        ),  # fmt: skip
        "superglue/CB/val.jsonl": jsonl(
            {"premise": "P", "hypothesis": "H", "label": "entailment", "idx": 0}
        ),
    },
    "superglue/copa": {
        "superglue/COPA/train.jsonl": jsonl(
            {
                "premise": "It rained.",
                "choice1": "The grass got wet.",
                "choice2": "The sun shone.",
                "question": "effect",
                "label": 0,
                "idx": 0,
            }
        ),  # fmt: skip
        "superglue/COPA/val.jsonl": jsonl(
            {
                "premise": "I slept.",
                "choice1": "I ran.",
                "choice2": "I was tired.",
                "question": "cause",
                "label": 1,
                "idx": 0,
            }
        ),  # fmt: skip
    },
    "superglue/multirc": {
        "superglue/MultiRC/train.jsonl": jsonl(MULTIRC),
        "superglue/MultiRC/val.jsonl": jsonl({**MULTIRC, "idx": 1}),
    },
    "superglue/record": {
        "superglue/ReCoRD/train.jsonl": jsonl(RECORD),
        "superglue/ReCoRD/val.jsonl": jsonl({**RECORD, "qas": RECORD["qas"][1:]}),
    },
    "superglue/rte": {
        "superglue/RTE/train.jsonl": jsonl(
            {"premise": "P", "hypothesis": "H", "label": "not_entailment", "idx": 0}
        ),
        "superglue/RTE/val.jsonl": jsonl(
            {"premise": "P", "hypothesis": "H", "label": "entailment", "idx": 0}
        ),
    },
    "superglue/wic": {
        "superglue/WiC/train.jsonl": jsonl(
            {
                "word": "bank",
                "sentence1": "The river bank.",
                "sentence2": "The bank loan.",
                "idx": 0,
                "label": False,
                "start1": 10,
                "start2": 4,
                "end1": 14,
                "end2": 8,
                "version": 1.1,
            }
        ),  # fmt: skip
        "superglue/WiC/val.jsonl": jsonl(
            {
                "word": "run",
                "sentence1": "I run.",
                "sentence2": "They run.",
                "idx": 0,
                "label": True,
                "start1": 2,
                "start2": 5,
                "end1": 5,
                "end2": 8,
                "version": 1.1,
            }
        ),  # fmt: skip
    },
    "superglue/wsc": {
        "superglue/WSC/train.jsonl": jsonl(
            {
                "text": "Mark told Pete he was late.",
                "idx": 0,
                "label": True,
                "target": {
                    "span1_index": 0,
                    "span1_text": "Mark",
                    "span2_index": 3,
                    "span2_text": "he",
                },
            }
        ),  # fmt: skip
        "superglue/WSC/val.jsonl": jsonl(
            {
                "text": "Ann saw Kim; she waved.",
                "idx": 0,
                "label": False,
                "target": {
                    "span1_index": 2,
                    "span1_text": "Kim;",
                    "span2_index": 3,
                    "span2_text": "she",
                },
            }
        ),  # fmt: skip
    },
    "superglue/axb": {
        "superglue/AX-b/AX-b.jsonl": jsonl(
            {
                "sentence1": "S1",
                "sentence2": "S2",
                "label": "not_entailment",
                "idx": 0,
                "logic": "Negation",
            },
            {"sentence1": "S3", "sentence2": "S4", "label": "entailment", "idx": 1},
        ),  # fmt: skip
    },
    "superglue/axg": {
        "superglue/AX-g/AX-g.jsonl": jsonl(
            {
                "premise": "The nurse said he was late.",
                "hypothesis": "The nurse was late.",
                "label": "entailment",
                "idx": 0,
                "pair_id": 551,
            },
            {
                "premise": "The nurse said she was late.",
                "hypothesis": "The nurse was late.",
                "label": "entailment",
                "idx": 1,
                "pair_id": 551,
            },
        ),  # fmt: skip
    },
}

# task -> split -> list of labels (the hub's ids), in file order
EXPECTED = {
    "glue/cola": {"train": [1, 0], "validation": [0], "test": [-1]},
    "glue/sst2": {"train": [1, 0], "validation": [1], "test": [-1]},
    "glue/mrpc": {"train": [1, 0], "validation": [0]},
    "glue/qqp": {"train": [1, 0], "validation": [0], "test": [-1]},
    "glue/stsb": {"train": [4.2], "validation": [0.0]},
    "glue/mnli": {
        "train": [0, 2, 1],
        "validation_matched": [1],
        "validation_mismatched": [2],
        "test_matched": [-1],
    },
    "glue/qnli": {"train": [0, 1], "validation": [1]},
    "glue/rte": {"train": [0], "validation": [1]},
    "glue/wnli": {"train": [1, 0], "validation": [0]},
    "glue/ax": {"validation": [2, 0], "test": [-1]},
    "superglue/boolq": {"train": [1, 0], "validation": [0], "test": [-1]},
    "superglue/cb": {"train": [2, 1], "validation": [0]},
    "superglue/copa": {"train": [0], "validation": [1]},
    "superglue/multirc": {"train": [1, 0, 1, 0, 1], "validation": [1, 0, 1, 0, 1]},
    "superglue/record": {"train": [1, 0], "validation": [0]},
    "superglue/rte": {"train": [1], "validation": [0]},
    "superglue/wic": {"train": [0], "validation": [1]},
    "superglue/wsc": {"train": [1], "validation": [0]},
    "superglue/axb": {"test": [1, 0]},
    "superglue/axg": {"test": [0, 0]},
}


def write_samples(root, task):
    """Write ``SAMPLES[task]`` under ``root`` (a ``pathlib.Path``); return ``root``."""
    for rel, text in SAMPLES[task].items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root
