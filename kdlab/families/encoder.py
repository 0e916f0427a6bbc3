"""Encoder family (BERT-style): a classification or regression head, ``[B, C]`` logits;
hidden states and attentions of its one stack (``"encoder"``) for feature terms."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from kdlab.batching import EncodedDataset
from kdlab.errors import ConfigError
from kdlab.families import FAMILIES
from kdlab.families.base import Batch, Family, Outputs, Predictions
from kdlab.models.hf import load_classifier
from kdlab.precision import autocast

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@FAMILIES.register("encoder")
class EncoderFamily(Family):
    name = "encoder"
    stacks = ("encoder",)
    class_logits = True
    auto_class_name = "AutoModelForSequenceClassification"
    pipeline_tag = "text-classification"
    architecture_suffix = "ForSequenceClassification"

    def load(self, path: str, num_labels: int, key: str, reinit_head: bool = False) -> Any:
        return load_classifier(path, num_labels, key=key, reinit_head=reinit_head)

    def from_config(self, config: Any) -> torch.nn.Module:
        return AutoModelForSequenceClassification.from_config(config)

    def check_task(self, task: Any) -> None:
        if task.kind not in ("classification", "regression"):
            raise ConfigError(
                f"dataset={task.name} is a {task.kind} task; an encoder classifier cannot score it. "
                "Use teacher.family=seq2seq or causal (rank classification)"
            )

    def dataset(self, tokenizer: Any, examples: Sequence[Any], task: Any, dataset_cfg: Any,
                cache_dir: Optional[str] = None) -> EncodedDataset:
        self.check_task(task)
        return EncodedDataset(tokenizer, examples, dataset_cfg.max_length, task.is_regression, cache_dir,
                              truncation=dataset_cfg.truncation)

    def forward(self, model: torch.nn.Module, batch: Batch) -> Outputs:
        out = model(**{k: batch[k] for k in INPUTS if k in batch}, **self.feature_kwargs(model))
        feats = self.feature_fields({"encoder": (out.hidden_states, out.attentions, batch["attention_mask"])})
        return Outputs(out.logits, **feats)  # [B, C]

    def supervised_loss(self, out: Outputs, batch: Batch) -> torch.Tensor:
        """Mean loss over the examples with a gold label (``has_label``; all without it).
        Transfer rows are replaced by exact zeros on the device (selecting the labelled rows
        would wait for the device): they get exactly zero gradient from it, and a batch
        without a labelled row gives 0."""
        z = out.logits.float()  # [B, C]
        labels = batch["labels"]  # [B]
        keep = batch.get("has_label")  # [B] bool, present when the data has transfer examples
        if keep is None:
            if labels.is_floating_point():  # regression (STS-B): one output, MSE
                return F.mse_loss(z.squeeze(-1), labels)
            return F.cross_entropy(z, labels)
        labels = torch.where(keep, labels, 0)  # a transfer row's label may be anything
        if labels.is_floating_point():
            rows = F.mse_loss(z.squeeze(-1), labels, reduction="none")
        else:
            rows = F.cross_entropy(z, labels, reduction="none")
        return torch.where(keep, rows, 0.0).sum() / keep.sum().clamp_min(1)

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, loader: Any, device: torch.device, precision: str) -> Predictions:
        """Class ids and the max softmax probability; regression: the score, no confidence."""
        model.to(device).eval()
        out, conf = [], []
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device, precision):
                logits = self.forward(model, batch).logits.float()  # [B, C]
            if logits.shape[-1] == 1:
                out.append(logits[:, 0].cpu().numpy())
                continue
            p, pred = torch.softmax(logits, -1).max(-1)  # [B], [B]
            out.append(pred.cpu().numpy())
            conf.append(p.cpu().numpy())
        return Predictions(np.concatenate(out), np.concatenate(conf) if conf else None)
