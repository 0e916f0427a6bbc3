"""What the two token-level families (seq2seq, causal) share: special tokens, padding,
vocabulary slicing, masked token cross-entropy, per-sequence log-likelihoods and the
collection of hidden states / attentions for feature terms."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from kdlab.data import prompts
from kdlab.divergences.base import reduce
from kdlab.divergences.chunked import position_cross_entropy
from kdlab.errors import ConfigError
from kdlab.families.base import Family
from kdlab.models import TOKENIZER_SIZE_ATTR, tokenizer_size
from kdlab.models.hf import load_lm


def eos_id(tokenizer: Any) -> int:
    """End of a target: the tokenizer's EOS, or SEP for a WordPiece (BERT) tokenizer."""
    for tid in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if tid is not None:
            return int(tid)
    raise ConfigError(f"the {type(tokenizer).__name__} has neither an EOS nor a SEP token")


def bos_id(tokenizer: Any) -> Optional[int]:
    """Start of a causal sequence: BOS (LLaMA, GPT-2), CLS (WordPiece), or none."""
    for tid in (tokenizer.bos_token_id, tokenizer.cls_token_id):
        if tid is not None:
            return int(tid)
    return None


def pad_id(tokenizer: Any) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return eos_id(tokenizer)  # GPT-2 has no pad token; padded positions are masked anyway


def ids(tokenizer: Any, texts: Sequence[str]) -> List[List[int]]:
    """Token ids without special tokens (added explicitly where a family wants them)."""
    return [list(x) for x in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def pad(rows: Sequence[Sequence[int]], value: int, left: bool = False) -> torch.Tensor:
    """``[N, L]`` long tensor of ``rows`` padded with ``value`` to the longest (L >= 1)."""
    width = max([len(r) for r in rows] + [1])
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            row = torch.as_tensor(list(r), dtype=torch.long)
            if left:
                out[i, width - len(r):] = row
            else:
                out[i, :len(r)] = row
    return out


def slice_vocab(logits: torch.Tensor, vocab: Optional[int]) -> torch.Tensor:
    """Drop the padding rows of an embedding padded to a multiple of 8/64: ``[..., V]``."""
    return logits if vocab is None or logits.shape[-1] == vocab else logits[..., :vocab]


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the unmasked tokens, float32 (0 when every token is masked).

    ``logits [B, T, V]``, ``targets [B, T]``, ``mask [B, T]`` bool. Every position is
    computed, by blocks of rows, and the masked ones are replaced by exact zeros (value
    and gradient) on the device: selecting the answer tokens would synchronise with the
    host, and a float32 copy of the whole logits is never made.
    """
    V = logits.shape[-1]
    keep = mask.reshape(-1)
    safe_targets = torch.where(keep, targets.reshape(-1), 0)  # padding may hold any id
    values = position_cross_entropy(logits.reshape(-1, V), safe_targets, keep)
    return reduce(values, logits.shape[0], "mean", keep)


def sequence_logprobs(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Summed log-likelihood ``[N]`` and length ``[N]`` of the unmasked targets of each row."""
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [N, T]
    return (logp * mask).sum(-1), mask.sum(-1)


def model_kwargs(family: Family, model: torch.nn.Module) -> Dict[str, Any]:
    """Forward kwargs of a language model: no KV cache, plus the features asked for."""
    return {"use_cache": False, **family.feature_kwargs(model)}


def rank(logprobs: torch.Tensor, lengths: torch.Tensor, owner: torch.Tensor, n: int,
         scoring: str) -> Tuple[List[int], List[float]]:
    """Rank classification of ``n`` examples from the scores of their flattened choices:
    ``owner[j]`` is the example of choice row j; ``scoring`` "sum" or "mean" (per token).
    Returns each example's choice and its confidence: the softmax over the example's choice
    scores (the same scores the choice is ranked by) at the chosen one."""
    lp: List[List[float]] = [[] for _ in range(n)]
    ln: List[List[int]] = [[] for _ in range(n)]
    for j, i in enumerate(owner.tolist()):
        lp[i].append(float(logprobs[j]))
        ln[i].append(max(int(lengths[j]), 1))
    normalise = scoring == "mean"
    choice = prompts.rank_classification(lp, ln, normalise=normalise).tolist()
    conf = []
    for s, k, c in zip(lp, ln, choice, strict=True):
        score = np.asarray(s) / np.asarray(k) if normalise else np.asarray(s)
        e = np.exp(score - score.max())
        conf.append(float(e[c] / e.sum()))
    return choice, conf


def flatten_choices(rows: Sequence[Dict[str, Any]]) -> Tuple[List[Any], torch.Tensor]:
    """Every choice of every row, and ``owner [N]``: the row each belongs to."""
    seqs, owner = [], []
    for i, r in enumerate(rows):
        seqs.extend(r["choices"])
        owner.extend([i] * len(r["choices"]))
    return seqs, torch.tensor(owner, dtype=torch.long)


class TokenFamily(Family):
    """What the seq2seq and causal families share: language-model checkpoints, a dataset
    class of their own, logits sliced to the tokenizer's vocabulary, token cross-entropy."""

    auto_class: Any  # AutoModelForSeq2SeqLM / AutoModelForCausalLM
    dataset_class: Any

    @property
    def auto_class_name(self) -> str:  # type: ignore[override]
        return self.auto_class.__name__

    def vocab_of(self, model: torch.nn.Module) -> int:
        """The size of ``model``'s own tokenizer, which the model carries
        (``kdlab.models.carry_tokenizer_size``, set where it was loaded or built): logits beyond
        it are embedding padding. Read from the model, so that one family instance serves
        any number of models (teacher, student, several teachers) with no state of its own."""
        vocab = tokenizer_size(model)
        if vocab is None:
            raise TypeError(f"a {type(getattr(model, 'module', model)).__name__} reached the {self.name} family "
                            f"without its tokenizer's size ({TOKENIZER_SIZE_ATTR}): build it with a "
                            "kdlab.models builder, or record it with kdlab.models.carry_tokenizer_size(model, len(tokenizer))")
        return vocab

    def load(self, path: str, num_labels: int, key: str, reinit_head: bool = False) -> Any:
        return load_lm(path, self.auto_class, key)

    def from_config(self, config: Any) -> torch.nn.Module:
        return self.auto_class.from_config(config)

    def check_task(self, task: Any) -> None:
        """A task needs a prompt template of this family (the causal family has none for
        STS-B's scores: rank classification needs classes)."""
        prompts.template(task.name, self.name)

    def dataset(self, tokenizer: Any, examples: Sequence[Any], task: Any, dataset_cfg: Any,
                cache_dir: Optional[str] = None) -> Any:
        self.check_task(task)
        return self.dataset_class(tokenizer, examples, task, dataset_cfg)

    @abstractmethod
    def generated_batch(self, model: torch.nn.Module, batch: Dict[str, torch.Tensor], rows: torch.Tensor,
                        sampling: Any) -> Dict[str, torch.Tensor]:
        """``batch`` with the answers of ``rows [B]`` (bool) sampled from ``model`` under
        ``sampling`` (a ``kdlab.families.generation.Sampling``) in place of the gold ones:
        on-policy distillation (``kdlab.on_policy``)."""

    def supervised_loss(self, out: Any, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Token cross-entropy on the answers of examples with a gold label (``has_label``);
        a transfer example's answer is the teacher's choice, distilled but not supervised."""
        mask = out.mask  # [B, T]
        keep = batch.get("has_label")  # [B] bool, present when the data has transfer examples
        if keep is not None:
            mask = mask & keep[:, None]
        return token_cross_entropy(out.logits, batch["target_ids"], mask)

