"""The interface every model family implements."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Optional, Sequence, Tuple

import numpy as np
import torch

Batch = Dict[str, torch.Tensor]


@dataclass
class Outputs:
    """What one forward pass gives the objective.

    ``logits``: ``[B, C]`` (classification) or ``[B, T, V]`` (token level).
    ``mask``: ``None``, or ``[B, T]`` bool marking the positions that are distilled and
    supervised (target tokens, answer tokens); everything else gets no loss.

    Filled only when a feature term asks for them (``Family.features``), keyed by stack
    (``"encoder"``, ``"decoder"``): ``hidden_states[stack][i]`` ``[B, L, H]`` (index 0 the
    embeddings, i the output of block i), ``attentions[stack][i]`` ``[B, heads, L, L]``
    (block i), and ``feature_masks[stack]`` ``[B, L]`` bool (the real, non-padding tokens).

    ``sparse``: set on a teacher read from a top-k token cache (``kdlab.token_cache``), a
    ``kdlab.divergences.sparse.SparseTeacher``; ``logits`` then hold its top-k
    log-probabilities ``[B, T, k]``, not logits over the vocabulary.
    """

    logits: torch.Tensor
    mask: Optional[torch.Tensor] = None
    hidden_states: Optional[Dict[str, Tuple[torch.Tensor, ...]]] = None
    attentions: Optional[Dict[str, Tuple[torch.Tensor, ...]]] = None
    feature_masks: Optional[Dict[str, torch.Tensor]] = None
    sparse: Optional[Any] = None


FEATURES = ("hidden_states", "attentions")


@dataclass
class Predictions:
    """``values [N]``: one prediction per example in the form ``kdlab.data.score`` takes;
    ``confidence [N]`` or ``None``: the probability the model gives its prediction (class
    probabilities: softmax of the class logits; rank classification: softmax over the
    example's choice scores), ``None`` where there is no class distribution (regression,
    generated numbers)."""

    values: np.ndarray
    confidence: Optional[np.ndarray] = None


class Family(ABC):
    name: str
    # Whether the logits are ``[B, C]`` over the task's classes, one row per example with
    # its gold class (the encoder's classification heads), rather than over a vocabulary at
    # answer positions. Class logits do not depend on the tokenizers (logit terms work
    # across them), carry one gold label per example (label-aware terms) and give a single
    # output on a regression task; the token families teacher-force an answer instead.
    class_logits: bool = False
    # What a saved model of this family is to the Hugging Face ecosystem: the transformers
    # Auto class that loads it, the hub's pipeline tag (model cards), and the architecture
    # name suffix that identifies a checkpoint of this family without kdlab's sidecar.
    auto_class_name: str
    pipeline_tag: str
    architecture_suffix: str
    # The stacks whose hidden states / attentions ``forward`` can return, in order (the
    # last one produces the logits); empty: the family does not support feature terms.
    stacks: Tuple[str, ...] = ()
    # What ``forward`` returns besides logits, a subset of FEATURES: empty, unless the
    # family is the copy ``with_features`` gives a phase whose feature terms read them
    # (both the teacher's and the student's forwards).
    features: FrozenSet[str] = frozenset()

    def with_features(self, features: FrozenSet[str]) -> Family:
        """This family, as a copy whose ``forward`` also returns ``features`` (a family
        holds no state of its own: the copy serves the same models). ``self`` when nothing
        changes."""
        if frozenset(features) == self.features:
            return self
        out = copy.copy(self)
        out.features = frozenset(features)
        return out

    def feature_kwargs(self, model: torch.nn.Module) -> Dict[str, Any]:
        """Forward kwargs asking for the features the family's feature terms need."""
        kw: Dict[str, Any] = {}
        if "hidden_states" in self.features:
            kw["output_hidden_states"] = True
        if "attentions" in self.features:
            inner = getattr(model, "module", model)  # DDP
            if inner.config._attn_implementation != "eager":  # fused kernels return no weights
                inner.set_attn_implementation("eager")
            kw["output_attentions"] = True
        return kw

    def feature_fields(self, per_stack: Dict[str, Tuple[Any, Any, torch.Tensor]]) -> Dict[str, Any]:
        """``Outputs`` keyword arguments from ``{stack: (hidden_states, attentions, mask)}``."""
        if not self.features:
            return {}
        out: Dict[str, Any] = {"feature_masks": {k: v[2].bool() for k, v in per_stack.items()}}
        if "hidden_states" in self.features:
            out["hidden_states"] = {k: tuple(v[0]) for k, v in per_stack.items()}
        if "attentions" in self.features:
            out["attentions"] = {k: tuple(v[1]) for k, v in per_stack.items()}
        return out

    @abstractmethod
    def load(self, path: str, num_labels: int, key: str, reinit_head: bool = False) -> Any:
        """Load a checkpoint (local dir or hub id) as a ``kdlab.models.Loaded``."""

    @abstractmethod
    def from_config(self, config: Any) -> torch.nn.Module:
        """A randomly initialised model of this family from a transformers config."""

    def check_task(self, task: Any) -> None:
        """Raise ``ConfigError`` if this family cannot train on and score ``task`` (a
        ``TaskSpec``); called on the config before any model is loaded."""
        return None

    @abstractmethod
    def dataset(self, tokenizer: Any, examples: Sequence[Any], task: Any, dataset_cfg: Any,
                cache_dir: Optional[str] = None) -> torch.utils.data.Dataset:
        """Tokenised examples (``dataset_cfg`` is the ``dataset`` config node: max_length,
        truncation, ...). Items carry their ``index``; the dataset has a ``collate`` method,
        a ``labels`` tensor (the training targets) and ``examples``, the ``Example`` list
        it was built from: evaluation scores with ``kdlab.data.score(task, predictions,
        dataset.examples)``, which reads gold labels, MultiRC / AX-g groups and ReCoRD
        answers from them, the same way in every family."""

    @abstractmethod
    def forward(self, model: torch.nn.Module, batch: Batch) -> Outputs:
        """Run ``model`` on a batch already on its device."""

    @abstractmethod
    def supervised_loss(self, out: Outputs, batch: Batch) -> torch.Tensor:
        """The loss on gold labels / targets (float32 scalar)."""

    @abstractmethod
    def predict(self, model: torch.nn.Module, loader: Any, device: torch.device, precision: str) -> Predictions:
        """One prediction per example (a class id, a choice index (COPA, ReCoRD) or a score
        (regression)) and, for classes, its confidence."""

    def predictions(self, model: torch.nn.Module, loader: Any, device: torch.device,
                    precision: str) -> np.ndarray:
        """The predictions alone, in the form ``kdlab.data.score`` takes."""
        return self.predict(model, loader, device, precision).values


class WrappedFamily(Family):
    """A family that runs another one's models differently (both networks of an online
    phase, TED's filter probes): it loads, builds and encodes exactly as ``base`` does and
    overrides only the steps it changes."""

    def __init__(self, base: Family) -> None:
        self.base, self.name, self.class_logits = base, base.name, base.class_logits

    def load(self, *args: Any, **kwargs: Any) -> Any:
        return self.base.load(*args, **kwargs)

    def from_config(self, config: Any) -> torch.nn.Module:
        return self.base.from_config(config)

    def dataset(self, *args: Any, **kwargs: Any) -> Any:
        return self.base.dataset(*args, **kwargs)
