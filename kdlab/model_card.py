"""The ``README.md`` model card of a saved student: what it is, how to use it without
kdlab, how it was trained, how it scored, and where it came from."""

from __future__ import annotations

import json
from typing import Any, List, Mapping

from omegaconf import OmegaConf

from kdlab.families import get_family

TITLES = {"student": "distilled student", "baseline_student": "baseline student (trained without a teacher)",
          "online_teacher": "teacher trained online with the student"}


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def usage(meta: Mapping[str, Any]) -> List[str]:
    """How to load and score the model with plain transformers."""
    cls, family = meta["auto_class"], meta["family"]
    lines = ["## Use it (transformers only)", "", "```python",
             f"from transformers import {cls}, AutoTokenizer", "",
             f'model = {cls}.from_pretrained("<this directory>").eval()',
             'tokenizer = AutoTokenizer.from_pretrained("<this directory>")']
    ds = meta["dataset"]
    if get_family(family).class_logits:
        lines += [f'batch = tokenizer(text_a, text_b, truncation="{ds["truncation"]}", '
                  f'max_length={ds["max_length"]}, padding=True, return_tensors="pt")',
                  "label_ids = model(**batch).logits.argmax(-1)  # model.config.id2label names them", "```"]
        return lines
    p = meta["prompt"]
    answers = "the label strings " + json.dumps(p["targets"]) if p["targets"] else "the example's candidate answers"
    lines += ["```", "", "### How an answer is chosen", "",
              f"Rank classification: the prompt is `{p['input']!r}` formatted with the example's fields; "
              f"the answers are {answers}.",
              f"Each answer is scored by the {'summed' if ds['rank_scoring'] == 'sum' else 'per-token mean'} "
              "log-likelihood of its tokens (`log_softmax` over the model's logits) and the best one is "
              "the prediction."]
    if family == "seq2seq":
        lines += [f"The source is `tokenizer(prompt, truncation=True, max_length={ds['max_length']})`; each "
                  "answer's ids are `tokenizer(answer, add_special_tokens=False)` plus "
                  "`model.config.eos_token_id`, teacher-forced after `model.config.decoder_start_token_id`."]
    else:
        lines += [f"Each answer is formatted with `{p['choice']!r}` (`{{choice}}`: the answer). The input is "
                  "`model.config.bos_token_id` (when set), the prompt's ids, then the answer's ids (both "
                  "`tokenizer(text, add_special_tokens=False)`); a prompt longer than "
                  f"{ds['max_length']} minus the longest answer minus one keeps its end. The answer's ids "
                  "are scored given everything before them."]
    return lines


def metrics_table(results: Mapping[str, Any]) -> List[str]:
    metric = results["metric"]
    cols = [metric] + [k for k in results["teacher"]["dev"] if k != metric]
    rows = [("majority class", results.get("majority", {}).get("dev", {})),
            (f"teacher ({results['teacher']['name']})", results["teacher"]["dev"])]
    if "baseline_student" in results:
        rows.append(("student, no distillation", results["baseline_student"]["dev"]))
    if "student" in results:
        rows.append((f"student, distilled ({results.get('divergence', '')})", results["student"]["dev"]))
    out = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, dev in rows:
        if dev:
            out.append(f"| {name} | " + " | ".join(f"{dev[c]:.4f}" if c in dev else "-" for c in cols) + " |")
    return out


def model_card(role: str, meta: Mapping[str, Any], cfg: Any, results: Mapping[str, Any],
               data_sizes: Mapping[str, int], command: str) -> str:
    """The card of the model saved as ``role`` (``student`` / ``baseline_student``)."""
    task, family = meta["task"], meta["family"]
    t, s, obj, div = cfg.teacher, cfg.student, cfg.objective, cfg.divergence
    teacher = t.name + (f" ({t.path})" if t.path else "") + (f", {t.architecture}" if t.architecture else "")
    student = s.name + (f", layers {list(s.layers)}" if s.layers else "") + \
        (f", overrides {_plain(s.overrides)}" if s.overrides else "") + \
        (f", tokenizer {s.tokenizer}" if s.tokenizer != "teacher" else "")
    terms = {k: _plain(v) for k, v in obj.terms.items()} if obj.terms else {}
    sizes = ", ".join(f"{k} {v}" for k, v in data_sizes.items())
    lines = [
        "---", "library_name: transformers", f"pipeline_tag: {get_family(family).pipeline_tag}",
        f"tags: [kdlab, knowledge-distillation, {task.replace('/', '-')}]", "---", "",
        f"# {task}: {TITLES[role]}", "",
        f"{'An' if family == 'encoder' else 'A'} {family}-family model trained by kdlab {meta['kdlab_version']} on `{task}` "
        f"({'labels ' + ', '.join(meta['label_names']) if meta['label_names'] else 'a score'}).", "",
        *usage(meta), "",
        "## Training", "",
        f"- task: `{task}`; main metric `{meta['metric']}`",
        f"- teacher: {teacher}",
        f"- student: {student}",
    ]
    if cfg.online.method != "none" and role != "baseline_student":
        o = cfg.online
        lines += [f"- objective: online distillation `{o.method}` (teacher and student trained together; "
                  f"T={o.temperature}, t2={o.t2}; see kdlab docs/methods.md)"]
    elif role == "student":
        ce = obj.ce_weight if obj.ce_weight is not None else 1 - obj.alpha
        lines += [f"- objective: {obj.alpha} * KD(T={obj.kd.temperature}, t2={obj.kd.t2}, "
                  f"anneal={obj.kd.anneal}) + {ce:g} * CE"
                  + (f" + {div.weight} * {div.name}({_plain(div.params)})" if div.name != "none" else ""),
                  *([f"- extra terms: {terms}"] if terms else [])]
    else:
        lines += ["- objective: cross-entropy on the labels only (no teacher)"]
    tr = cfg.trainer
    lines += [
        f"- data (examples): {sizes}; teacher fine-tuning on at most "
        f"{t.finetune.max_train_samples or 'all'} training examples",
        f"- trainer: {results.get('steps', '?')} steps, batch {tr.batch_size}, lr {tr.lr}, "
        f"select {tr.select}, seed {cfg.seed}; inputs up to {cfg.dataset.max_length} tokens",
        "", "## Dev metrics", "", *metrics_table(results), "",
        "## Provenance", "",
        f"- kdlab {meta['kdlab_version']}, git commit {meta['git_commit'] or 'unknown'}",
        f"- command: `{command}`",
        "- `kdlab_model.json` holds the family, task and input settings kdlab reads back "
        "(`python -m kdlab.evaluate <this directory>`).", "",
    ]
    return "\n".join(lines)
