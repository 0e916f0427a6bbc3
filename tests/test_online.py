"""Online distillation: the DML and balanced-KL losses by hand, gradients that reach each
network from its own terms only, each network's optimizer groups, resume, config refusals,
and the CPU presets end to end (slow)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers import get_linear_schedule_with_warmup

from kdlab.config import OnlineConfig
from kdlab.errors import ConfigError
from kdlab.online import losses, phase
from kdlab.trainer import EpochSampler, LoopSettings
from kdlab.validation import validate
from tests.conftest import compose_config, run_cli
from tests.test_trainer import FAMILY, ToyData, tiny_model

Z_T = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3]])
Z_S = torch.tensor([[0.5, 0.5, 0.0], [1.0, -1.0, 2.0]])


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_kl(a, b):
    return (a * (np.log(a) - np.log(b))).sum(-1)


def test_dml_terms_by_hand():
    pt, ps = np_softmax(Z_T.numpy() / 2), np_softmax(Z_S.numpy() / 2)
    s, t, _ = losses.dml(Z_T, Z_S, temperature=2.0, t2=True)
    assert s.item() == pytest.approx(4 * np_kl(pt, ps).mean(), rel=1e-5)  # KL(p_t || p_s): the student's
    assert t.item() == pytest.approx(4 * np_kl(ps, pt).mean(), rel=1e-5)  # KL(p_s || p_t): the teacher's
    s1, _, _ = losses.dml(Z_T, Z_S)
    assert s1.item() == pytest.approx(np_kl(np_softmax(Z_T.numpy()), np_softmax(Z_S.numpy())).mean(), rel=1e-5)


@pytest.mark.parametrize("fn", [losses.dml, losses.balanced])
def test_each_term_reaches_only_its_own_network(fn):
    zt, zs = Z_T.clone().requires_grad_(), Z_S.clone().requires_grad_()
    s, t, _ = fn(zt, zs)
    gt, gs = torch.autograd.grad(s, [zt, zs], allow_unused=True)
    assert (gt is None or not gt.any()) and gs.abs().sum() > 0
    gt, gs = torch.autograd.grad(t, [zt, zs], allow_unused=True)
    assert gt.abs().sum() > 0 and (gs is None or not gs.any())


def test_balanced_weights_and_terms_by_hand():
    pt, ps = np_softmax(Z_T.numpy()), np_softmax(Z_S.numpy())
    h = lambda p: -(p * np.log(p)).sum(-1)  # noqa: E731
    gap = h(pt) - h(ps)
    w = 1 / (1 + np.exp(-2.0 * gap))
    s, t, stats = losses.balanced(Z_T, Z_S, scale=2.0)
    assert stats["forward_weight"].item() == pytest.approx(w.mean(), rel=1e-5)
    assert s.item() == pytest.approx((w * np_kl(pt, ps) + (1 - w) * np_kl(ps, pt)).mean(), rel=1e-5)
    assert t.item() == pytest.approx(np_kl(pt, ps).mean(), rel=1e-5)  # reverse: the teacher's own first
    _, t, _ = losses.balanced(Z_T, Z_S, teacher_term="forward")
    assert t.item() == pytest.approx(np_kl(ps, pt).mean(), rel=1e-5)
    hard = (gap > 0).astype(float)
    s, _, _ = losses.balanced(Z_T, Z_S, weight_fn="hard")
    assert s.item() == pytest.approx((hard * np_kl(pt, ps) + (1 - hard) * np_kl(ps, pt)).mean(), rel=1e-5)


def test_detached_weights_change_the_gradient_not_the_value():
    zs1, zs2 = Z_S.clone().requires_grad_(), Z_S.clone().requires_grad_()
    a, _, _ = losses.balanced(Z_T, zs1, detach_weights=True)
    b, _, _ = losses.balanced(Z_T, zs2, detach_weights=False)
    assert a.item() == pytest.approx(b.item())
    assert not torch.allclose(torch.autograd.grad(a, zs1)[0], torch.autograd.grad(b, zs2)[0])


def fake_exp(tmp_path, tracker, method="dml", teacher_lr=1e-3, **online):  # noqa: F811
    cfg = OmegaConf.structured(OnlineConfig(method=method))
    cfg.teacher.lr = teacher_lr
    for k, v in online.items():
        OmegaConf.update(cfg, k, v)
    evaluate = lambda model, evals: {"accuracy": 0.5}  # noqa: E731
    return SimpleNamespace(cfg=SimpleNamespace(online=cfg, output_dir=str(tmp_path)), family=FAMILY,
                           tracker=tracker, device=torch.device("cpu"), precision="fp32",
                           task=SimpleNamespace(metric="accuracy"), evaluate=evaluate)


def loop(**kw):
    base = dict(epochs=1, max_steps=4, batch_size=8, lr=1e-3, log_every=1, progress=False, max_grad_norm=1e9)
    return LoopSettings(**{**base, **kw})


def fit(exp, teacher, student, tmp_path, settings, resume=False, evaluate=None):
    if evaluate is not None:
        exp.evaluate = evaluate
    return phase.fit(exp, SimpleNamespace(model=teacher), SimpleNamespace(model=student), ToyData(), {},
                     tmp_path / "ckpt", resume, {}, settings)


def test_each_network_steps_as_its_own_adamw_would(tmp_path, tracker):  # noqa: F811
    """The phase's one AdamW over both networks' groups == two AdamWs (one per network, own
    rate and schedule) on the same batches and losses."""
    exp = fake_exp(tmp_path, tracker, teacher_lr=3e-4)
    teacher, student = tiny_model(seed=1), tiny_model(seed=2)
    ref_t, ref_s = tiny_model(seed=1), tiny_model(seed=2)
    fit(exp, teacher, student, tmp_path, loop(weight_decay=0.01))
    opt = {m: torch.optim.AdamW([{"params": [p for n, p in m.named_parameters() if not n.endswith(("bias", "LayerNorm.weight"))],
                                  "weight_decay": 0.01 if m is ref_s else 0.0},
                                 {"params": [p for n, p in m.named_parameters() if n.endswith(("bias", "LayerNorm.weight"))],
                                  "weight_decay": 0.0}], lr=lr, eps=1e-8, fused=True)
           for m, lr in ((ref_s, 1e-3), (ref_t, 3e-4))}
    sched = [get_linear_schedule_with_warmup(o, 0, 4) for o in opt.values()]
    data, order = ToyData(), EpochSampler(32, 8, 0).indices()
    ref_t.train(), ref_s.train()
    for step in range(4):
        batch = data.collate(order[step * 8:(step + 1) * 8])
        zt, zs = FAMILY.forward(ref_t, batch).logits, FAMILY.forward(ref_s, batch).logits
        s, t, _ = losses.dml(zt, zs)
        ce = torch.nn.functional.cross_entropy
        (ce(zs, batch["labels"]) + s + ce(zt, batch["labels"]) + t).backward()
        for o in opt.values():
            o.step()
            o.zero_grad()
        for sc in sched:
            sc.step()
    for got, ref in ((teacher, ref_t), (student, ref_s)):
        for (n, a), b in zip(got.named_parameters(), ref.parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-6), n


def test_a_network_with_rate_zero_stays_put(tmp_path, tracker):  # noqa: F811
    exp = fake_exp(tmp_path, tracker, teacher_lr=0.0)
    teacher, student = tiny_model(seed=1), tiny_model(seed=2)
    t0, s0 = [p.clone() for p in teacher.parameters()], [p.clone() for p in student.parameters()]
    fit(exp, teacher, student, tmp_path, loop())
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), t0, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(student.parameters(), s0, strict=True))


def _interrupt(model):
    raise KeyboardInterrupt  # a kill after the step-3 checkpoint


def test_resume_equals_an_uninterrupted_run(tmp_path, tracker):  # noqa: F811
    exp = fake_exp(tmp_path, tracker, method="bdkd")
    straight_t, straight_s = tiny_model(seed=1, dropout=0.1), tiny_model(seed=2, dropout=0.1)
    fit(exp, straight_t, straight_s, tmp_path / "a", loop(max_steps=6))
    t, s = tiny_model(seed=1, dropout=0.1), tiny_model(seed=2, dropout=0.1)
    with pytest.raises(KeyboardInterrupt):
        fit(exp, t, s, tmp_path / "b", loop(max_steps=6, save_every=3, eval_strategy="steps", eval_every=4),
            evaluate=lambda m, e: _interrupt(m))
    t, s = tiny_model(seed=7, dropout=0.1), tiny_model(seed=8, dropout=0.1)  # all from the checkpoint
    result = fit(exp, t, s, tmp_path / "b", loop(max_steps=6), resume=True, evaluate=lambda m, e: {"accuracy": 0.5})
    assert result.steps == 6
    for a, b in zip([*straight_t.parameters(), *straight_s.parameters()], [*t.parameters(), *s.parameters()],
                    strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_split_dev_separates_the_online_teacher():
    summary = {"dev": {"accuracy": 0.8, "ece": 0.1, "online_teacher/accuracy": 0.9},
               "dev_best": {"accuracy": 0.8, "online_teacher/accuracy": 0.9}, "evaluations": 2}
    student, peer = phase.split_dev(summary)
    assert student["dev"] == {"accuracy": 0.8, "ece": 0.1} and student["evaluations"] == 2
    assert peer == {"dev": {"accuracy": 0.9}, "dev_best": {"accuracy": 0.9}}


@pytest.mark.parametrize("override, message", [
    ("divergence=sinkhorn", "computes its own losses"),
    ("transfer=unlabelled", "labelled data only"),
    ("online.temperature=0", "must be > 0"),
    ("hardware=ddp_cpu", "runs in one process"),
])
def test_refusals(override, message, tmp_path):
    cfg = compose_config(["experiment=methods/cpu/dml", override, f"cache_dir={tmp_path}", "logger=none"])
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


@pytest.mark.parametrize("override", ["online.method=mutual", "online.weight_fn=soft", "online.teacher_term=both"])
def test_closed_choices_are_refused_while_composing(override, tmp_path):
    out = run_cli(["experiment=methods/cpu/dml", override, "logger=none", f"cache_dir={tmp_path}"])
    key, value = override.split("=")
    assert out.returncode == 2 and f"kdlab: error: {key}='{value}': valid values are" in out.stderr, out.stderr


def test_presets_compose():
    for name, method in (("dml", "dml"), ("bdkd_online", "bdkd")):
        cfg = compose_config([f"experiment=methods/cpu/{name}", "logger=none"])
        validate(cfg)
        assert cfg.online.method == method and not cfg.online.teacher.finetuned
        assert cfg.dataset.max_train_samples == 512 and cfg.trainer.max_steps == 160
    off = compose_config(["experiment=methods/cpu/kd_offline", "logger=none"])
    assert off.online.method == "none" and off.objective.alpha == 1.0 and off.teacher.finetune.max_train_samples == 512
    full = compose_config(["experiment=methods/dml", "teacher.path=x", "logger=none"])
    assert full.online.temperature == 1.0 and full.online.kl_weight == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["dml", "bdkd_online"])
def test_cpu_preset_end_to_end(preset, tmp_path, data_dir):
    run_dir = tmp_path / "run"
    out = run_cli([f"experiment=methods/cpu/{preset}", "trainer.max_steps=4", "dataset.max_train_samples=32",
                   "dataset.max_eval_samples=32", "logger=none", f"cache_dir={tmp_path / 'cache'}",
                   f"hydra.run.dir={run_dir}"], env_extra={"KDLAB_DATA_DIR": str(data_dir)})
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((run_dir / "results.json").read_text())
    for who in ("teacher", "online_teacher", "student"):
        assert 0.0 <= res[who]["dev"]["ece"] <= 1.0 and not math.isnan(res[who]["dev"]["accuracy"])
        assert "reliability" in res[who]
    assert res["steps"] == 4 and res["online_teacher"]["method"] == preset.split("_")[0]
    assert (run_dir / "online_teacher" / "config.json").is_file() and (run_dir / "student" / "config.json").is_file()
    assert (run_dir / "checkpoints" / "online").is_dir() or res["config"]["trainer"]["save_every"] == 0
