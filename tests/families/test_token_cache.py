"""The top-k token-level teacher cache of the seq2seq and causal families: what it stores
(round trip against the live teacher, in shuffled batches and across shards), its size per
token, its key, and the objectives it refuses."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from famtools import Pair, examples, make_pair
from omegaconf import OmegaConf

from kdlab import cache_keys, divergences, token_cache
from kdlab.batching import loader
from kdlab.config import DatasetConfig
from kdlab.data import get_task
from kdlab.errors import ConfigError
from kdlab.objective import Objective, Term, build_objective
from kdlab.trainer import agreement
from tests.conftest import compose_config


def write(p: Pair, root, k: int, shard_tokens: int = 1 << 20, dataset=None):
    root.mkdir()
    token_cache.write(root, p.teacher.model, dataset or p.dataset, p.family, torch.device("cpu"), "fp32",
                      batch_size=2, k=k, temperature=1.0, shard_tokens=shard_tokens)
    return token_cache.TokenCachedTeacher(root)


@pytest.mark.parametrize("shard_tokens", [1 << 20, 2])
def test_round_trip_in_shuffled_batches_equals_the_live_teachers_top_k(pair: Pair, tmp_path, shard_tokens):
    cache = write(pair, tmp_path / "c", k=8, shard_tokens=shard_tokens)
    assert (len(cache.shards) > 1) == (shard_tokens == 2)
    seen = 0
    for batch in loader(pair.dataset, batch_size=2, shuffle=True, seed=3):
        out = cache(batch)
        with torch.no_grad():
            live = pair.family.forward(pair.teacher.model, batch)
        assert torch.equal(out.mask, live.mask)
        logp, index, tail = token_cache.top_k_rows(live.logits[live.mask], 8, 1.0)
        sp = out.sparse
        assert torch.equal(sp.index[out.mask], index)
        torch.testing.assert_close(sp.logp[out.mask], logp, atol=2e-2, rtol=1e-3)  # float16
        torch.testing.assert_close(sp.tail[out.mask], tail, atol=2e-2, rtol=1e-3)
        seen += len(batch["index"])
    assert seen == len(pair.dataset)


def test_bytes_per_token_at_k_64_stay_under_300(tmp_path, cache_dir):
    """float16 log-probabilities + uint16 indices + a float16 tail: 4 * 64 + 2 = 258 bytes a
    token, plus offsets and file headers (here ~60 examples)."""
    p = make_pair("causal", cache_dir)
    task = "superglue/copa"
    many = [dataclasses.replace(ex, idx=i) for i, ex in enumerate(examples(task) * 20)]
    ds = p.family.dataset(p.teacher.tokenizer, many, get_task(task),
                          OmegaConf.structured(DatasetConfig(name=task, max_length=32)))
    cache = write(p, tmp_path / "c", k=64, dataset=ds)
    assert cache.meta["index_dtype"] == "uint16" and cache.shards[0]["logp"].dtype == np.float16
    assert cache.meta["tokens"] > 100
    on_disk = sum(f.stat().st_size for f in (tmp_path / "c").iterdir() if f.name != "meta.json")
    assert cache.bytes_per_token == pytest.approx(on_disk / cache.meta["tokens"], abs=0.01)
    assert 258 <= cache.bytes_per_token <= 300
    assert cache.report()["bytes_per_token"] == cache.bytes_per_token


def test_a_vocabulary_beyond_uint16_gets_int32_indices():
    assert token_cache.index_dtype(65536) == np.uint16 and token_cache.index_dtype(65537) == np.int32


def test_key_changes_with_k_teacher_weights_and_example_content(cache_dir):
    p = make_pair("causal", cache_dir)
    task = "superglue/copa"
    exs = examples(task)
    dcfg = OmegaConf.structured(DatasetConfig(name=task, max_length=32))

    def key(model=p.teacher.model, exs=exs, k=64, temperature=1.0, family="causal"):
        return cache_keys.token_teacher_outputs(model, p.teacher.tokenizer, task, family, exs, dcfg, "fp32", k,
                                                temperature, token_cache.FORMAT)

    base = key()
    assert key() == base
    other = copy.deepcopy(p.teacher.model)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    edited = [dataclasses.replace(exs[0], text_a=exs[0].text_a + "!"), *exs[1:]]
    changed = [key(k=32), key(model=other), key(exs=edited), key(temperature=2.0), key(family="seq2seq")]
    assert len({base, *changed}) == 1 + len(changed)


def cfg(*overrides):
    return compose_config(["experiment=smoke_causal", "trainer.teacher_cache.top_k=64", *overrides])


def test_config_checks_return_the_storage_temperature_and_refuse_what_the_cache_cannot_serve():
    for c in (cfg(), compose_config(["experiment=smoke_causal_topk"])):
        assert c.trainer.teacher_cache.top_k == 64
        assert token_cache.enabled(c) and token_cache.check(c, build_objective(c)) == 1.0
    assert not token_cache.enabled(cfg("trainer.cache_teacher_outputs=false"))
    bad = {"divergence=sinkhorn": "sinkhorn", "divergence=mse": "mse", "objective.kd.temperature=2.0": "one temperature",
           "objective.kd.anneal=epoch": "anneal", "trainer.teacher_cache.top_k=0": ">= 1"}
    for override, match in bad.items():
        c = cfg(override)
        with pytest.raises(ConfigError, match=match):
            token_cache.check(c, build_objective(c))
    enc = compose_config(["experiment=smoke", "trainer.teacher_cache.top_k=8"])
    with pytest.raises(ConfigError, match="seq2seq and causal"):
        token_cache.check(enc, build_objective(enc))


def test_objective_routes_a_cached_teacher_to_the_sparse_divergence(pair: Pair, tmp_path):
    """With k = V the cached teacher gives the live teacher's loss (float16 rounding aside)."""
    V = len(pair.teacher.tokenizer)
    cache = write(pair, tmp_path / "c", k=V)
    obj = Objective(0.0, [Term("kl", 1.0, divergences.get("kl"))])
    with torch.no_grad():
        s = pair.family.forward(pair.student.model, pair.batch)
        live, _ = obj(s, s.logits.sum() * 0, pair.family.forward(pair.teacher.model, pair.batch))
        cached, _ = obj(s, s.logits.sum() * 0, cache(pair.batch))
    torch.testing.assert_close(cached, live, rtol=1e-3, atol=1e-4)
    teacher = pair.family.forward(pair.teacher.model, pair.batch)
    assert agreement(s, cache(pair.batch)) == agreement(s, teacher)  # the top-1 index is the argmax
    assert agreement(teacher, cache(pair.batch)) == 1.0
