"""A compressed, memory-mapped cache of a token-level teacher: top-k plus a tail bucket.

The seq2seq and causal families distil every answer token against the teacher's
distribution over the vocabulary; recomputing it costs a teacher forward per step, and
storing it whole costs ``4 V`` bytes a token (128 KB at V = 32000). With
``trainer.cache_teacher_outputs=true trainer.teacher_cache.top_k=k`` the teacher runs once
over the training set and, per answer token (the positions of ``Outputs.mask``), keeps:

- ``logp [k]`` float16: the log-probabilities of its ``k`` most likely tokens, at the
  temperature of the objective's logit terms (they must share one; see ``check``);
- ``index [k]``: those tokens, uint16 when the vocabulary has at most 65536 entries,
  int32 otherwise;
- ``tail`` float16: the log of the mass left, a log-sum-exp over the other ``V - k``
  log-probabilities (no cancellation in ``1 - sum``).

That is ``4k + 2`` bytes a token with uint16 indices (258 at k = 64, 514 at k = 128) and
``6k + 2`` with int32 ones, plus 8 bytes an example for its offset. float16 keeps a
log-probability to 11 significant bits: an absolute error below 0.01 down to -16, 0.03
down to -64 (probabilities below e^-16 ~ 1e-7 barely count in any divergence).

Layout, under ``<cache_dir>/teacher_outputs/<key>/`` (``kdlab.cache_keys.token_teacher_outputs``):
``meta.json``; ``offsets.npy`` int64 ``[N + 1]`` (example i owns tokens
``offsets[i]:offsets[i + 1]``, in answer order); shards ``shard-NNNNN-{logp,index,tail}.npy``
of whole examples, about ``trainer.teacher_cache.shard_tokens`` tokens each, memory-mapped
and read a batch at a time. The directory is written aside and renamed into place, so a
killed run leaves no half cache. Divergences use it through ``kdlab.divergences.sparse``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from kdlab import distributed
from kdlab.batching import teacher_batch
from kdlab.divergences.base import compute_dtype
from kdlab.divergences.sparse import SparseTeacher
from kdlab.errors import ConfigError, DataError
from kdlab.families import get_family
from kdlab.families.base import Family, Outputs
from kdlab.precision import autocast

log = logging.getLogger(__name__)

FORMAT = 1  # the layout above; part of the key
UINT16_VOCAB = 1 << 16


def enabled(cfg: Any) -> bool:
    """Whether ``cfg`` asks for the top-k token cache (a token family, caching on, k set)."""
    return (not get_family(cfg.teacher.family).class_logits and bool(cfg.trainer.cache_teacher_outputs)
            and cfg.trainer.teacher_cache.top_k is not None)


def check(cfg: Any, objective: Any) -> Optional[float]:
    """Refuse a top-k cache the objective cannot use, before any model is loaded; return
    the temperature it is stored at (None: no token cache).

    Every weighted term must take a sparse teacher (a softmax divergence: not ``mse``,
    Sinkhorn, ULD or a feature term, which need the full distribution or hidden states),
    and they must share one temperature without annealing: a tail mass stored at one
    temperature cannot be converted to another.
    """
    top_k = cfg.trainer.teacher_cache.top_k
    if top_k is None:
        return None
    if int(top_k) < 1:
        raise ConfigError(f"trainer.teacher_cache.top_k={top_k}: must be >= 1 (or null: no top-k cache)")
    if int(cfg.trainer.teacher_cache.shard_tokens) < 1:
        raise ConfigError(f"trainer.teacher_cache.shard_tokens={cfg.trainer.teacher_cache.shard_tokens}: must be >= 1")
    if get_family(cfg.teacher.family).class_logits:
        raise ConfigError("trainer.teacher_cache.top_k applies to the seq2seq and causal families; the encoder "
                          "family caches its class logits whole. Set trainer.teacher_cache.top_k=null")
    if not enabled(cfg):
        return None
    terms = [t for t in objective.terms if t.weight > 0]
    for t in terms:
        if not t.module.takes_sparse_teacher:
            raise ConfigError(f"the term {t.name} ({t.key or 'objective.terms'}) needs the teacher's full "
                              "distribution or hidden states, which a top-k teacher cache does not keep; "
                              "set trainer.teacher_cache.top_k=null (teacher computed live)")
    temps = sorted({float(t.module.temperature) for t in terms})
    if len(temps) > 1:
        raise ConfigError(f"a top-k teacher cache stores log-probabilities at one temperature; the objective's "
                          f"terms use {temps}. Give them one temperature or set trainer.teacher_cache.top_k=null")
    if any(t.module.anneal != "none" for t in terms):  # takes_sparse_teacher: a LogitDivergence
        raise ConfigError("objective.kd.anneal changes the KD temperature during training, which a top-k teacher "
                          "cache (stored at one temperature) cannot follow; set objective.kd.anneal=none or "
                          "trainer.teacher_cache.top_k=null")
    return temps[0] if temps else 1.0


def index_dtype(vocab: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab <= UINT16_VOCAB else np.dtype(np.int32)


@torch.no_grad()
def top_k_rows(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logp [N, k], index [N, k], tail [N])`` of logits ``[N, V]`` at ``temperature``,
    in float32 (float64 kept) and long; ``tail`` is -inf when ``k = V``."""
    log_p = torch.log_softmax(compute_dtype(logits) / temperature, dim=-1)
    k = min(k, log_p.shape[-1])
    logp, index = log_p.topk(k, dim=-1)
    tail = log_p.scatter(-1, index, -math.inf).logsumexp(-1)
    return logp, index, tail


class _ShardWriter:
    """Collects rows in dataset order and writes them as shards of whole examples."""

    def __init__(self, root: Path, shard_tokens: int, idx_dtype: np.dtype) -> None:
        self.root, self.shard_tokens, self.idx_dtype = root, shard_tokens, idx_dtype
        self.parts: List[tuple] = []
        self.pending = 0
        self.shards: List[Dict[str, int]] = []
        self.first_example = 0
        self.examples = 0

    def add(self, logp: np.ndarray, index: np.ndarray, tail: np.ndarray) -> None:
        """One example's rows (``[n, k]``, ``[n, k]``, ``[n]``)."""
        self.parts.append((logp, index, tail))
        self.pending += len(tail)
        self.examples += 1
        if self.pending >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        i = len(self.shards)
        for j, (name, dtype) in enumerate((("logp", np.float16), ("index", self.idx_dtype), ("tail", np.float16))):
            np.save(self.root / f"shard-{i:05d}-{name}.npy", np.concatenate([p[j] for p in self.parts]).astype(dtype))
        n = len(self.parts)
        self.shards.append({"first": self.first_example, "examples": n, "tokens": self.pending})
        self.first_example += n
        self.parts, self.pending = [], 0


def write(root: Path, model: torch.nn.Module, dataset: Any, family: Family, device: torch.device,
          precision: str, batch_size: int, k: int, temperature: float, shard_tokens: int) -> None:
    """Run the teacher over ``dataset`` (in order) and write the cache directory ``root``."""
    model.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=dataset.collate)
    vocab: Optional[int] = None
    writer: Optional[_ShardWriter] = None
    offsets = [0]
    for batch in loader:
        batch = {key: v.to(device) for key, v in batch.items()}
        with torch.no_grad(), autocast(device, precision):
            out = family.forward(model, batch)
        logits, mask = out.logits, out.mask  # [B, T, V], [B, T]
        if writer is None:
            vocab = int(logits.shape[-1])
            writer = _ShardWriter(root, shard_tokens, index_dtype(vocab))
        logp, index, tail = (x.cpu().numpy() for x in top_k_rows(logits[mask], k, temperature))
        counts = mask.sum(-1).tolist()
        start = 0
        for n in counts:
            writer.add(logp[start:start + n], index[start:start + n], tail[start:start + n])
            offsets.append(offsets[-1] + n)
            start += n
    if writer is None:
        raise DataError("the teacher cache has no examples to cover")
    writer.flush()
    np.save(root / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    meta = {"format": FORMAT, "k": min(k, vocab), "vocab": vocab, "temperature": temperature,
            "index_dtype": writer.idx_dtype.name, "examples": len(offsets) - 1, "tokens": offsets[-1],
            "shards": writer.shards}
    # every data file (shards, offsets, their headers) per token; meta.json left out
    meta["bytes_per_token"] = round(sum(f.stat().st_size for f in root.iterdir()) / max(offsets[-1], 1), 2)
    (root / "meta.json").write_text(json.dumps(meta, indent=1))


def cached(root: Path, make: Any) -> TokenCachedTeacher:
    """Open the cache ``root``, writing it first (rank 0, aside then renamed) if missing.
    ``make(tmp_dir)`` writes the files."""
    if not (root / "meta.json").exists():
        if distributed.is_main():
            tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            make(tmp)
            if root.exists():  # an earlier run killed before its meta.json: never a valid cache
                shutil.rmtree(root)
            os.replace(tmp, root)
            log.info("token-level teacher cache written at %s", root)
        distributed.barrier()
    else:
        log.info("token-level teacher cache read from %s", root)
    reader = TokenCachedTeacher(root)
    log.info("token-level teacher cache: k=%d, %d tokens, %.1f bytes per token", reader.k,
             reader.meta["tokens"], reader.bytes_per_token)
    return reader


class TokenCachedTeacher:
    """``teacher_outputs(batch)`` from a token cache: ``Outputs`` whose ``sparse`` holds
    the batch's ``SparseTeacher`` ``[B, T, k]`` and whose ``logits`` are its top-k
    log-probabilities (``mask`` the batch's answer tokens, from its ``target_mask``).

    It reads the batch's example indices and answer masks on the host: the trainer hands
    it the batch as collated, before the copy to the device (``from_host``), so that a
    step never waits for the device to send them back
    (``kdlab.teacher_outputs.HostBatchSource``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta = json.loads((root / "meta.json").read_text())
        self.k = int(self.meta["k"])
        self.temperature = float(self.meta["temperature"])
        self.bytes_per_token = float(self.meta["bytes_per_token"])
        self.offsets = np.load(root / "offsets.npy")
        self.shard_first_example = np.asarray([s["first"] for s in self.meta["shards"]], dtype=np.int64)
        self.shards = [{name: np.load(root / f"shard-{i:05d}-{name}.npy", mmap_mode="r")
                        for name in ("logp", "index", "tail")} for i in range(len(self.meta["shards"]))]

    def report(self) -> Dict[str, Any]:
        """What ``results.json`` records of the cache."""
        return {"kind": "token_top_k", "k": self.k, "temperature": self.temperature,
                "tokens": int(self.meta["tokens"]), "bytes_per_token": self.bytes_per_token,
                "index_dtype": self.meta["index_dtype"]}

    def rows(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Example ``i``'s stored ``(logp [n, k], index [n, k], tail [n])``."""
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        s = int(np.searchsorted(self.shard_first_example, i, side="right")) - 1  # shards hold whole examples
        base = int(self.offsets[self.shard_first_example[s]])
        shard = self.shards[s]
        return shard["logp"][lo - base:hi - base], shard["index"][lo - base:hi - base], shard["tail"][lo - base:hi - base]

    def __call__(self, batch: Dict[str, torch.Tensor]) -> Outputs:
        """The outputs on the device of ``batch`` (which is read on the host: on a GPU
        this waits for the device; the trainer calls ``from_host``)."""
        return self.from_host({k: v.cpu() for k, v in batch.items()}, batch["index"].device)

    def from_host(self, batch: Dict[str, torch.Tensor], device: torch.device) -> Outputs:
        """The outputs of a batch still on the host, copied to ``device`` without blocking."""
        mask = teacher_batch(batch)["target_mask"]  # [B, T] bool, the answer tokens
        rows = [self.rows(int(i)) for i in batch["index"].tolist()]
        counts = mask.sum(-1).tolist()
        for i, n, r in zip(batch["index"].tolist(), counts, rows, strict=True):
            if len(r[2]) != n:
                raise DataError(f"the token teacher cache {self.root} holds {len(r[2])} tokens for example {i} "
                                f"but the batch has {n}; delete the directory to rebuild it")
        B, T = mask.shape
        logp = torch.zeros(B, T, self.k)
        index = torch.zeros(B, T, self.k, dtype=torch.long)
        tail = torch.zeros(B, T)
        logp[mask] = torch.from_numpy(np.concatenate([r[0] for r in rows]).astype(np.float32))
        index[mask] = torch.from_numpy(np.concatenate([r[1] for r in rows]).astype(np.int64))
        tail[mask] = torch.from_numpy(np.concatenate([r[2] for r in rows]).astype(np.float32))
        logp, index, tail, mask = (x.to(device, non_blocking=True) for x in (logp, index, tail, mask))
        sparse = SparseTeacher(logp, index, tail, self.temperature)
        return Outputs(sparse.logp, mask, sparse=sparse)


def teacher_outputs(root: Path, model: torch.nn.Module, dataset: Any, family: Family, device: torch.device,
                    precision: str, batch_size: int, k: int, temperature: float,
                    shard_tokens: int) -> TokenCachedTeacher:
    """The cache at ``root`` (``<cache_dir>/teacher_outputs/<key>``), computed if missing."""
    return cached(root, lambda tmp: write(tmp, model, dataset, family, device, precision, batch_size, k,
                                          temperature, shard_tokens))
