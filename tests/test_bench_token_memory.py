"""scripts/bench_token_memory.py builds the smoke_causal models at the vocabulary asked for
and runs kdlab's step and the plain KL step on them (a small vocabulary here)."""


import pytest

from tests.conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_token_memory")


def test_the_preset_models_take_the_vocabulary(bench, cache_dir):
    cfg, family, teacher, student, objective, batch = bench.setup(640, str(cache_dir))
    assert cfg.experiment_name == "smoke_causal" and {t.name for t in objective.terms} == {"kd", "kl"}
    assert family.forward(student, batch).logits.shape == (16, 12, 640)
    assert (teacher.config.n_layer, student.config.n_layer, student.config.n_embd) == (2, 1, 64)


@pytest.mark.parametrize("variant", ["plain_kl", "kdlab"])
def test_each_variant_runs_one_step(bench, cache_dir, variant):
    out = bench.run_variant(variant, 640, str(cache_dir))
    assert out["answer_tokens"] == 124 and out["positions"] == 192
    assert out["peak_mb"] is None or out["peak_mb"] >= 0
