"""Input formats of the generative families: text-to-text prompts (encoder-decoder, T5
style) and rank classification (decoder-only, GPT style).

A ``Template`` is a format string over an example's fields (``text_a``, ``text_b``, the
task's raw fields such as ``word`` or ``premise``, and ``choice1``.. for COPA) plus the
verbalised labels.

* seq2seq: source ``input``, target the verbalised gold label (STS-B: the score rounded
  to 0.2, as T5 does; ReCoRD: the first gold answer).
* causal: the prompt ``input`` is followed by each answer choice (``choice`` formatted
  with ``{choice}``: a verbalised label, or a candidate such as a COPA alternative or a
  ReCoRD entity); the prediction is the choice with the highest summed, or
  length-normalised, log-likelihood (the rank classification of T0-style evaluation).

Defaults follow T5's task prefixes and the GPT-3 / T0 prompt styles; any of them can be
replaced through ``template(task, family, override)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from kdlab.data.examples import Example
from kdlab.data.tasks import get_task
from kdlab.errors import ConfigError

FAMILIES = ("seq2seq", "causal")


@dataclass(frozen=True)
class Template:
    input: str
    targets: Tuple[str, ...] = ()  # one per label id; empty: the example's choices
    choice: str = " {choice}"  # causal family: the continuation scored for each option


def _t(input: str, targets: Sequence[str] = (), choice: str = " {choice}") -> Template:
    return Template(input, tuple(targets), choice)


YES_NO = ("no", "yes")
# task -> family -> default template
DEFAULTS: Dict[str, Dict[str, Template]] = {
    "glue/cola": {
        "seq2seq": _t("cola sentence: {text_a}", ("unacceptable", "acceptable")),
        "causal": _t("{text_a}\nQuestion: Is this sentence grammatical? Answer:", YES_NO),
    },
    "glue/sst2": {
        "seq2seq": _t("sst2 sentence: {text_a}", ("negative", "positive")),
        "causal": _t("{text_a}\nQuestion: Is this review positive or negative? Answer:", ("negative", "positive")),
    },
    "glue/mrpc": {
        "seq2seq": _t("mrpc sentence1: {text_a} sentence2: {text_b}", ("not_equivalent", "equivalent")),
        "causal": _t("{text_a}\n{text_b}\nQuestion: Do both sentences mean the same thing? Answer:", YES_NO),
    },
    "glue/qqp": {
        "seq2seq": _t("qqp question1: {text_a} question2: {text_b}", ("not_duplicate", "duplicate")),
        "causal": _t("{text_a}\n{text_b}\nQuestion: Do both questions ask the same thing? Answer:", YES_NO),
    },
    "glue/stsb": {
        "seq2seq": _t("stsb sentence1: {text_a} sentence2: {text_b}"),
    },
    "glue/mnli": {
        "seq2seq": _t("mnli hypothesis: {text_b} premise: {text_a}", ("entailment", "neutral", "contradiction")),
        "causal": _t("{text_a}\nQuestion: {text_b} True, False or Neither? Answer:", ("True", "Neither", "False")),
    },
    "glue/qnli": {
        "seq2seq": _t("qnli question: {text_a} sentence: {text_b}", ("entailment", "not_entailment")),
        "causal": _t("{text_b}\nQuestion: Does this sentence answer \"{text_a}\"? Answer:", ("yes", "no")),
    },
    "glue/rte": {
        "seq2seq": _t("rte sentence1: {text_a} sentence2: {text_b}", ("entailment", "not_entailment")),
        "causal": _t("{text_a}\nQuestion: {text_b} True or False? Answer:", ("True", "False")),
    },
    "glue/wnli": {
        "seq2seq": _t("wnli sentence1: {text_a} sentence2: {text_b}", ("not_entailment", "entailment")),
        "causal": _t("{text_a}\nQuestion: {text_b} True or False? Answer:", ("False", "True")),
    },
    "glue/ax": {
        "seq2seq": _t("mnli hypothesis: {text_b} premise: {text_a}", ("entailment", "neutral", "contradiction")),
        "causal": _t("{text_a}\nQuestion: {text_b} True, False or Neither? Answer:", ("True", "Neither", "False")),
    },
    "superglue/boolq": {
        "seq2seq": _t("boolq question: {text_a} passage: {text_b}", ("False", "True")),
        "causal": _t("{text_b}\nQuestion: {text_a}? Answer:", YES_NO),
    },
    "superglue/cb": {
        "seq2seq": _t("cb hypothesis: {text_b} premise: {text_a}", ("entailment", "contradiction", "neutral")),
        "causal": _t("{text_a}\nQuestion: {text_b} True, False or Neither? Answer:", ("True", "False", "Neither")),
    },
    "superglue/copa": {
        "seq2seq": _t("copa choice1: {choice1} choice2: {choice2} premise: {premise} question: {question}", ("choice1", "choice2")),
        # "The man broke his toe because" / "so" + the lower-cased alternative
        "causal": _t("{premise_stem} {connective}", choice=" {choice_lower}"),
    },
    "superglue/multirc": {
        "seq2seq": _t("multirc question: {question} answer: {answer} paragraph: {text_a}", ("False", "True")),
        "causal": _t("{text_a}\nQuestion: {question}\nIs \"{answer}\" a correct answer? Answer:", YES_NO),
    },
    "superglue/record": {
        "seq2seq": _t("record query: {query} entities: {entities} passage: {passage}"),
        # the query with the placeholder filled by each entity, after the passage
        "causal": _t("{passage}\n", choice="{query_filled}"),
    },
    "superglue/rte": {
        "seq2seq": _t("rte hypothesis: {text_b} premise: {text_a}", ("entailment", "not_entailment")),
        "causal": _t("{text_a}\nQuestion: {text_b} True or False? Answer:", ("True", "False")),
    },
    "superglue/wic": {
        "seq2seq": _t("wic sentence1: {sentence1} sentence2: {sentence2} word: {word}", ("False", "True")),
        "causal": _t("{sentence1}\n{sentence2}\nQuestion: Is the word \"{word}\" used in the same way in the two sentences above? Answer:", YES_NO),
    },
    "superglue/wsc": {
        "seq2seq": _t("wsc text: {text} span1: {span1_text} span2: {span2_text}", ("False", "True")),
        "causal": _t("{text}\nQuestion: In the passage above, does the pronoun \"{span2_text}\" refer to {span1_text}? Answer:", YES_NO),
    },
    "superglue/axb": {
        "seq2seq": _t("rte hypothesis: {text_b} premise: {text_a}", ("entailment", "not_entailment")),
        "causal": _t("{text_a}\nQuestion: {text_b} True or False? Answer:", ("True", "False")),
    },
    "superglue/axg": {
        "seq2seq": _t("rte hypothesis: {text_b} premise: {text_a}", ("entailment", "not_entailment")),
        "causal": _t("{text_a}\nQuestion: {text_b} True or False? Answer:", ("True", "False")),
    },
}  # fmt: skip


def template(task: str, family: str, override: Optional[Mapping[str, Any]] = None) -> Template:
    """The template of ``task`` for ``family``, with ``override`` keys (input, targets,
    choice) replacing the default's."""
    spec = get_task(task)
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; valid families: {', '.join(FAMILIES)}")
    default = DEFAULTS.get(spec.name, {}).get(family)
    if default is None and family in spec.prompts:  # a task's own (kdlab/data/local/)
        own = spec.prompts[family]
        default = _t(own["input"], own.get("targets", ()), own.get("choice", " {choice}"))
    if default is None and not override:
        why = ("rank classification needs classes, not a score); use teacher.family=encoder or seq2seq"
               if spec.name in DEFAULTS else "give its task module one: tsv_task(..., prompts=...)); or use "
               "teacher.family=encoder")
        raise ConfigError(f"dataset={task} has no {family} template ({why}")
    base = default or Template(input="")
    if override:
        unknown = set(override) - {"input", "targets", "choice"}
        if unknown:
            raise ConfigError(f"unknown prompt key(s) {sorted(unknown)}; valid keys: input, targets, choice")
        base = replace(base, **{k: tuple(v) if k == "targets" else v for k, v in override.items()})
    if base.targets and spec.kind != "multiple_choice" and len(base.targets) != spec.num_labels:
        raise ConfigError(f"{task} has {spec.num_labels} labels but the template has {len(base.targets)} targets")
    return base


def fields(ex: Example) -> Dict[str, Any]:
    """The names a template may use."""
    out: Dict[str, Any] = {"text_a": ex.text_a, "text_b": ex.text_b or "", **ex.fields}
    if len(ex.choices) <= 4:
        out.update({f"choice{i}": c for i, c in enumerate(ex.choices, start=1)})
    if "premise" in ex.fields and "question" in ex.fields:  # COPA
        out["premise_stem"] = ex.fields["premise"].rstrip(". ")
        out["connective"] = "because" if ex.fields["question"] == "cause" else "so"
    if "query" in ex.fields:  # ReCoRD
        out["entities"] = ", ".join(ex.choices)
    return out


def _render(fmt: str, values: Mapping[str, Any], task: str) -> str:
    try:
        return fmt.format(**values)
    except KeyError as e:
        raise ConfigError(f"prompt for {task} uses {{{e.args[0]}}}; available fields: {', '.join(values)}") from None


def seq2seq(task: str, ex: Example, tpl: Template) -> Tuple[str, str]:
    """(source, target) of one example; the target is empty for unlabelled examples."""
    source = _render(tpl.input, fields(ex), task)
    if not ex.has_label:
        return source, ""
    if get_task(task).is_regression:
        return source, f"{round(float(ex.label) * 5) / 5:.1f}"
    if ex.answers:
        return source, ex.answers[0]
    return source, tpl.targets[int(ex.label)] if tpl.targets else ex.choices[int(ex.label)]


def choices(task: str, ex: Example, tpl: Template) -> Tuple[str, List[str]]:
    """(prompt, continuations): the gold continuation is at index ``ex.label``."""
    values = fields(ex)
    prompt = _render(tpl.input, values, task)
    options = list(tpl.targets) or ex.choices
    conts = []
    for option in options:
        extra = {"choice": option, "choice_lower": option[:1].lower() + option[1:]}
        if "query" in values:
            extra["query_filled"] = values["query"].replace("@placeholder", option)
        conts.append(_render(tpl.choice, {**values, **extra}, task))
    return prompt, conts


def rank_classification(
    logprobs: Sequence[Sequence[float]], lengths: Sequence[Sequence[int]], normalise: bool = False
) -> np.ndarray:
    """Index of the best continuation per example.

    ``logprobs[i][j]``: summed log-likelihood of continuation j of example i (ragged:
    ReCoRD's candidate counts differ); ``lengths[i][j]`` its token count. ``normalise``
    divides by the length (the mean log-likelihood per token).
    """
    out = []
    for lp, n in zip(logprobs, lengths, strict=True):
        s = np.asarray(lp, dtype=float)
        out.append(int(np.argmax(s / np.asarray(n, dtype=float) if normalise else s)))
    return np.asarray(out)
