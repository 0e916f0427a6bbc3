"""Decoder-only family (GPT-2 / LLaMA style): prompt + answer, distilled on the answer.

Each example is the task's prompt (``kdlab.data.prompts``) followed by the gold answer
choice (a verbalised label, a COPA alternative). Sequences are padded on the left, so
every answer ends at the last position: ``forward`` computes the LM head only on the
last ``A + 1`` positions (A = the batch's longest answer) and returns logits
``[B, A, V]`` where position j predicts answer token j, with ``mask [B, A]`` True on
answer tokens only (prompt and padding masked). Teacher and student are teacher-forced
on the gold answer. Evaluation is rank classification: every choice is scored by its
summed (or per-token) log-likelihood after the prompt and the best one is predicted.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from kdlab.data import prompts
from kdlab.errors import ConfigError
from kdlab.families import FAMILIES, generation
from kdlab.families import tokens as tk
from kdlab.families.base import Batch, Outputs, Predictions
from kdlab.precision import autocast


def _answer_batch(prompts_: Sequence[List[int]], answers: Sequence[List[int]], pad: int) -> Dict[str, torch.Tensor]:
    """Left-padded ``prompt + answer`` rows and the answer window at their end.

    ``input_ids`` / ``attention_mask`` ``[N, L]``; ``target_ids`` ``[N, A]`` the last A
    tokens; ``target_mask`` ``[N, A]`` True where that token belongs to the answer.
    """
    seqs = [p + a for p, a in zip(prompts_, answers, strict=True)]
    input_ids = tk.pad(seqs, pad, left=True)
    width = max([len(a) for a in answers] + [1])
    return {
        "input_ids": input_ids,
        "attention_mask": tk.pad([[1] * len(s) for s in seqs], 0, left=True),
        "target_ids": input_ids[:, -width:],
        "target_mask": tk.pad([[1] * len(a) for a in answers], 0, left=True)[:, -width:].bool(),
    }


class CausalDataset(torch.utils.data.Dataset):
    """Prompt ids and the ids of every answer choice, per example."""

    def __init__(self, tokenizer: Any, examples: Sequence[Any], task: Any, dataset_cfg: Any) -> None:
        tpl = prompts.template(task.name, "causal")
        bos = tk.bos_id(tokenizer)
        self.prompts: List[List[int]] = []
        self.choices: List[List[List[int]]] = []
        for ex in examples:
            prompt, conts = prompts.choices(task.name, ex, tpl)
            choice_ids = tk.ids(tokenizer, conts)
            # keep the end of a long prompt: it is what the answer continues
            room = dataset_cfg.max_length - max(len(c) for c in choice_ids) - (bos is not None)
            if room < 1:
                raise ConfigError(f"dataset.max_length={dataset_cfg.max_length} leaves no room for the "
                                  f"prompt of {task.name} example {ex.idx}; raise it")
            self.prompts.append(([bos] if bos is not None else []) + tk.ids(tokenizer, [prompt])[0][-room:])
            self.choices.append(choice_ids)
        self.labels = torch.tensor([ex.label for ex in examples], dtype=torch.long)
        self.examples = list(examples)  # scored by kdlab.data.score (groups, ReCoRD answers)
        self.pad = tk.pad_id(tokenizer)
        self.tokenizer, self.task, self.scoring = tokenizer, task, dataset_cfg.rank_scoring

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {"prompt": self.prompts[i], "choices": self.choices[i], "labels": self.labels[i], "index": i}

    def collate(self, rows: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        # gold answers (unlabelled examples: an empty answer, nothing to learn)
        gold = [r["choices"][int(r["labels"])] if int(r["labels"]) >= 0 else [] for r in rows]
        batch = _answer_batch([r["prompt"] for r in rows], gold, self.pad)
        seqs, owner = tk.flatten_choices(rows)
        choices = _answer_batch([rows[i]["prompt"] for i in owner.tolist()], seqs, self.pad)
        batch.update({f"choice_{k}": v for k, v in choices.items()})
        batch["choice_owner"] = owner  # [N]
        batch["labels"] = torch.stack([r["labels"] for r in rows])
        batch["index"] = torch.tensor([r["index"] for r in rows])
        return batch


def _window_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   width: int, kwargs: Dict[str, Any]) -> Any:
    """Run the model; ``logits [N, width, V]`` predict the last ``width`` tokens."""
    inner = getattr(model, "module", model)
    # Left padding: positions count real tokens only, as if each row started at 0.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    if "logits_to_keep" in inspect.signature(inner.forward).parameters:
        kwargs = {**kwargs, "logits_to_keep": width + 1}  # the LM head on the window only
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
    return out, out.logits[:, -(width + 1):-1]  # position t predicts token t + 1


@FAMILIES.register("causal")
class CausalFamily(tk.TokenFamily):
    name = "causal"
    stacks = ("decoder",)

    auto_class = AutoModelForCausalLM
    dataset_class = CausalDataset
    pipeline_tag = "text-generation"
    architecture_suffix = "ForCausalLM"

    def forward(self, model: torch.nn.Module, batch: Batch) -> Outputs:
        mask = batch["target_mask"]  # [B, A]
        out, logits = _window_logits(model, batch["input_ids"], batch["attention_mask"], mask.shape[1],
                                     tk.model_kwargs(self, model))
        feats = self.feature_fields({"decoder": (out.hidden_states, out.attentions, batch["attention_mask"])})
        return Outputs(tk.slice_vocab(logits, self.vocab_of(model)), mask, **feats)  # [B, A, V]

    def generated_batch(self, model: torch.nn.Module, batch: Batch, rows: torch.Tensor,
                        sampling: generation.Sampling) -> Batch:
        """``batch`` with the answers of ``rows [B]`` sampled from ``model`` after their prompts
        (up to and including EOS), the other rows' gold answers kept: ``input_ids``,
        ``attention_mask``, ``target_ids`` and ``target_mask`` rebuilt as the dataset builds
        them, so the mask covers answer tokens only (prompt and padding masked)."""
        device = batch["input_ids"].device
        prompts: List[List[int]] = []
        answers: List[List[int]] = []
        for seq, real, n in zip(batch["input_ids"].tolist(), batch["attention_mask"].bool().tolist(),
                                batch["target_mask"].sum(-1).tolist(), strict=True):
            seq = [t for t, r in zip(seq, real, strict=True) if r]  # left padding dropped
            prompts.append(seq[:len(seq) - n])
            answers.append(seq[len(seq) - n:])
        chosen = rows.nonzero().flatten().tolist()
        if chosen:
            ids = tk.pad([prompts[i] for i in chosen], sampling.pad_id, left=True).to(device)  # [n, P]
            mask = tk.pad([[1] * len(prompts[i]) for i in chosen], 0, left=True).to(device)
            out = generation.sample(model, sampling, self.vocab_of(model), input_ids=ids, attention_mask=mask)
            for i, answer in zip(chosen, generation.cut_at_eos(out[:, ids.shape[1]:], sampling.eos_id), strict=True):
                answers[i] = answer
        rebuilt = _answer_batch(prompts, answers, sampling.pad_id)
        return {**batch, **{k: v.to(device) for k, v in rebuilt.items()}}

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, loader: Any, device: torch.device, precision: str) -> Predictions:
        """Rank classification: each example's choice and its softmax over the choice scores."""
        model.to(device).eval()
        ds = loader.dataset
        out: List[int] = []
        conf: List[float] = []
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            targets, mask = batch["choice_target_ids"], batch["choice_target_mask"]  # [N, A]
            with autocast(device, precision):
                _, logits = _window_logits(model, batch["choice_input_ids"], batch["choice_attention_mask"],
                                           targets.shape[1], {"use_cache": False})
            lp, n = tk.sequence_logprobs(tk.slice_vocab(logits, self.vocab_of(model)), targets, mask)
            choice, c = tk.rank(lp, n, batch["choice_owner"], batch["labels"].shape[0], ds.scoring)
            out.extend(choice)
            conf.extend(c)
        return Predictions(np.asarray(out), np.asarray(conf))
