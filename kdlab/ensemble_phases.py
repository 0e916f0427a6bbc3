"""The run's phases with several teachers (``kdlab.ensemble``): the combined teacher
outputs the student is distilled from, and each teacher's and the mixture's dev scores."""

from __future__ import annotations

from typing import Any, Dict, List

import torch

from kdlab import cache_keys
from kdlab.ensemble import combined, mixture_logits
from kdlab.evaluate import scored
from kdlab.families.base import Predictions
from kdlab.models import Loaded, count_params
from kdlab.teacher_outputs import CachedTeacher, compute
from kdlab.validation import same_tokenizer


def _encoded(setup: Any, teacher: Loaded, examples: List[Any], ds: Any) -> Any:
    """``examples`` as ``teacher`` reads them: ``ds`` (the first teacher's encoding) when
    the tokenizers agree, else encoded by ``teacher``'s tokenizer."""
    return ds if same_tokenizer(teacher.tokenizer, setup.teacher.tokenizer) else \
        setup.exp.encode(teacher.tokenizer, examples)


def teacher_outputs(setup: Any) -> Any:
    """The distillation's ``teacher_outputs``: the teacher's logits on the distillation rows
    (labelled, then transfer: ``setup.t_distill``), cached or live. Several teachers: each
    one's, cached on disk under its own key (``kdlab.cache_keys.teacher_outputs``: its
    weights, tokenizer, the rows), then combined (``kdlab.ensemble.combined``)."""
    exp, rows, tables = setup.exp, setup.train_examples + setup.transfer_examples, []
    if not setup.members:
        return exp.teacher_outputs(setup.teacher, setup.teacher_hash, setup.t_distill, rows)
    for fitted in setup.members:
        t = fitted.teacher
        ds = setup.t_distill if same_tokenizer(t.tokenizer, setup.teacher.tokenizer) else exp.distill_view(
            t, t.tokenizer, exp.encode(t.tokenizer, setup.train_examples), setup.transfer_examples)
        out = exp.teacher_outputs(t, cache_keys.weights_digest(t.model), ds, rows)
        if not isinstance(out, CachedTeacher):  # check() keeps several teachers on cached outputs
            raise RuntimeError(f"teachers.{fitted.member.name}: its outputs are not cached")
        tables.append(out.logits)
    return combined(exp.cfg, tables)


def dev_rows(setup: Any, first_dev: Dict[str, float]) -> Dict[str, Any]:
    """Several teachers: ``results.json``'s ``teachers`` (each teacher's name, normalised weight, size and
    dev scores, by its name in ``teachers``; the first one's dev is ``first_dev``, the
    ``teacher`` row's) and, on a classification task, ``teacher_mixture``: the dev scores of
    the weighted mixture ``sum_i w_i softmax(z_i)`` (its argmax and its probability)."""
    exp = setup.exp
    if not setup.members:  # one teacher: its row is ``teacher``
        return {}
    rows: Dict[str, Any] = {}
    logits: List[Dict[str, torch.Tensor]] = []
    for i, fitted in enumerate(setup.members):
        t, m = fitted.teacher, fitted.member
        evals = {s: _encoded(setup, t, setup.eval_examples[s], ds) for s, ds in setup.evals.items()}
        dev = first_dev if i == 0 else exp.evaluate(t.model, evals)
        rows[m.name] = {"name": m.cfg.name, "weight": m.weight, "params": count_params(t.model), "dev": dev}
        if not exp.task.is_regression:
            logits.append({s: torch.from_numpy(compute(t.model, ds, exp.family, exp.device, exp.precision,
                                                       exp.cfg.trainer.eval_batch_size)) for s, ds in evals.items()})
    out: Dict[str, Any] = {"teachers": rows}
    if logits:
        weights = [f.member.weight for f in setup.members]
        preds = {}
        for split in setup.evals:
            p = mixture_logits([each[split] for each in logits], weights).exp()  # [N, C]
            conf, pred = p.max(-1)
            preds[split] = (Predictions(pred.numpy(), conf.numpy()), setup.eval_examples[split])
        out["teacher_mixture"] = {"weights": {f.member.name: f.member.weight for f in setup.members},
                                  "dev": scored(exp.task.name, preds)}
    return out
