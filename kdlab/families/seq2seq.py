"""Encoder-decoder family (T5 style): text to text, token-level logits over the target.

The source is the task's prompt (``kdlab.data.prompts``, T5's task prefixes), the target
the verbalised gold label followed by EOS. ``forward`` is teacher-forced on the gold
target: logits ``[B, T, V]`` at the T target positions, ``mask [B, T]`` the real
(non-padding) target tokens. Evaluation ranks the label strings (or a multiple-choice
task's alternatives) by their log-likelihood given the source; a regression task (STS-B)
is evaluated by greedy generation of the score.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from transformers import AutoModelForSeq2SeqLM
from transformers.modeling_outputs import BaseModelOutput

from kdlab.data import prompts
from kdlab.families import FAMILIES, generation
from kdlab.families import tokens as tk
from kdlab.families.base import Batch, Outputs, Predictions
from kdlab.precision import autocast

GENERATE_TOKENS = 8  # a score "3.4" is a handful of tokens


class Seq2SeqDataset(torch.utils.data.Dataset):
    """(source, target) token ids per example, plus the tokenised choices to rank."""

    def __init__(self, tokenizer: Any, examples: Sequence[Any], task: Any, dataset_cfg: Any) -> None:
        tpl = prompts.template(task.name, "seq2seq")
        pairs = [prompts.seq2seq(task.name, ex, tpl) for ex in examples]
        eos = tk.eos_id(tokenizer)
        self.sources: List[List[int]] = tokenizer([s for s, _ in pairs], truncation=True,
                                                  max_length=dataset_cfg.max_length)["input_ids"]
        self.targets = [t + [eos] for t in tk.ids(tokenizer, [t for _, t in pairs])]
        self.generate = task.is_regression  # no finite set of strings to rank
        shared = [t + [eos] for t in tk.ids(tokenizer, tpl.targets)] if tpl.targets else None
        self.choices = [[] if self.generate else shared or [c + [eos] for c in tk.ids(tokenizer, ex.choices)]
                        for ex in examples]
        self.labels = torch.tensor([ex.label for ex in examples],
                                   dtype=torch.float32 if task.is_regression else torch.long)
        self.examples = list(examples)  # scored by kdlab.data.score (groups, ReCoRD answers)
        self.pad = tk.pad_id(tokenizer)
        self.tokenizer, self.task, self.scoring = tokenizer, task, dataset_cfg.rank_scoring

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {"source": self.sources[i], "target": self.targets[i], "choices": self.choices[i],
                "labels": self.labels[i], "index": i}

    def collate(self, rows: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        src, tgt = [r["source"] for r in rows], [r["target"] for r in rows]
        batch = {
            "input_ids": tk.pad(src, self.pad),  # [B, S]
            "attention_mask": tk.pad([[1] * len(s) for s in src], 0),  # [B, S]
            "target_ids": tk.pad(tgt, self.pad),  # [B, T]
            "target_mask": tk.pad([[1] * len(t) for t in tgt], 0).bool(),  # [B, T]
            "labels": torch.stack([r["labels"] for r in rows]),
            "index": torch.tensor([r["index"] for r in rows]),
        }
        seqs, owner = tk.flatten_choices(rows)
        if seqs:
            batch["choice_ids"] = tk.pad(seqs, self.pad)  # [N, T']
            batch["choice_mask"] = tk.pad([[1] * len(c) for c in seqs], 0).bool()
            batch["choice_owner"] = owner  # [N]
        return batch


def decoder_start(model: torch.nn.Module) -> int:
    """The decoder's first input: its start token, or padding (T5) where it has none."""
    config = getattr(model, "module", model).config
    start = config.decoder_start_token_id
    return int(config.pad_token_id if start is None else start)


def shift_right(model: torch.nn.Module, targets: torch.Tensor) -> torch.Tensor:
    """Decoder inputs for teacher forcing: ``[start] + targets[:-1]`` (``[B, T]``)."""
    return torch.cat([targets.new_full((targets.shape[0], 1), decoder_start(model)), targets[:, :-1]], dim=1)


@FAMILIES.register("seq2seq")
class Seq2SeqFamily(tk.TokenFamily):
    name = "seq2seq"
    stacks = ("encoder", "decoder")

    auto_class = AutoModelForSeq2SeqLM
    dataset_class = Seq2SeqDataset
    pipeline_tag = "text2text-generation"
    architecture_suffix = "ForConditionalGeneration"

    def forward(self, model: torch.nn.Module, batch: Batch) -> Outputs:
        mask = batch["target_mask"]  # [B, T]
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    decoder_input_ids=shift_right(model, batch["target_ids"]),
                    decoder_attention_mask=mask.long(), **tk.model_kwargs(self, model))
        feats = self.feature_fields({
            "encoder": (out.encoder_hidden_states, out.encoder_attentions, batch["attention_mask"]),
            "decoder": (out.decoder_hidden_states, out.decoder_attentions, mask),
        })
        return Outputs(tk.slice_vocab(out.logits, self.vocab_of(model)), mask, **feats)  # [B, T, V]

    def generated_batch(self, model: torch.nn.Module, batch: Batch, rows: torch.Tensor,
                        sampling: generation.Sampling) -> Batch:
        """``batch`` with the targets of ``rows [B]`` sampled from ``model`` given their sources
        (up to and including EOS), the other rows' gold targets kept; ``target_ids`` and
        ``target_mask`` rebuilt right-padded, the mask on target tokens only."""
        device = batch["target_ids"].device
        targets = [[t for t, m in zip(ids, keep, strict=True) if m]
                   for ids, keep in zip(batch["target_ids"].tolist(), batch["target_mask"].tolist(), strict=True)]
        chosen = rows.nonzero().flatten().tolist()
        if chosen:
            index = torch.tensor(chosen, device=device)
            out = generation.sample(model, sampling, self.vocab_of(model), input_ids=batch["input_ids"][index],
                                    attention_mask=batch["attention_mask"][index],
                                    decoder_start_token_id=decoder_start(model))
            # out [n, 1 + new]: the start token, then the sampled ones
            for i, target in zip(chosen, generation.cut_at_eos(out[:, 1:], sampling.eos_id), strict=True):
                targets[i] = target
        return {**batch, "target_ids": tk.pad(targets, sampling.pad_id).to(device),  # [B, T']
                "target_mask": tk.pad([[1] * len(t) for t in targets], 0).bool().to(device)}

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, loader: Any, device: torch.device, precision: str) -> Predictions:
        """Rank classification (with confidences), or generated numbers (none)."""
        model.to(device).eval()
        ds = loader.dataset
        out: List[Any] = []
        conf: List[float] = []
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device, precision):
                if ds.generate:
                    out.extend(self._generate(model, batch, ds.tokenizer))
                else:
                    choice, c = self._rank(model, batch, ds.scoring)
                    out.extend(choice)
                    conf.extend(c)
        return Predictions(np.asarray(out), None if ds.generate else np.asarray(conf))

    def _rank(self, model: torch.nn.Module, batch: Batch, scoring: str) -> tuple[List[int], List[float]]:
        """Each example's choices scored given its source; the encoder runs once per example."""
        owner = batch["choice_owner"]  # [N]
        enc = model.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        choice_ids = batch["choice_ids"]  # [N, T']
        logits = model(encoder_outputs=BaseModelOutput(last_hidden_state=enc.last_hidden_state[owner]),
                       attention_mask=batch["attention_mask"][owner],
                       decoder_input_ids=shift_right(model, choice_ids), use_cache=False).logits
        lp, n = tk.sequence_logprobs(tk.slice_vocab(logits, self.vocab_of(model)), choice_ids, batch["choice_mask"])
        return tk.rank(lp, n, owner, batch["input_ids"].shape[0], scoring)

    def _generate(self, model: torch.nn.Module, batch: Batch, tokenizer: Any) -> List[float]:
        """Greedy decoding of a number (T5's STS-B format); unparseable output scores 0."""
        config = model.config
        gen = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             max_new_tokens=GENERATE_TOKENS, do_sample=False, num_beams=1,
                             decoder_start_token_id=decoder_start(model),
                             eos_token_id=tk.eos_id(tokenizer), pad_token_id=config.pad_token_id)
        values = []
        for text in tokenizer.batch_decode(gen, skip_special_tokens=True):
            try:
                values.append(float(text.replace(" ", "")))
            except ValueError:
                values.append(0.0)
        return values
