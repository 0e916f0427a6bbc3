"""Expected calibration error: a hand computation, a loop reference written differently,
the bin edges, and the families' confidences (encoder softmax, rank classification)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlab import calibration
from kdlab.families import tokens


def loop_ece(conf, correct, bins=15):
    """Reference: each bin's members found by comparing with its edges (lo, hi]."""
    total, n = 0.0, len(conf)
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(conf) if (lo < c <= hi) or (b == 0 and c == 0.0)]
        if members:
            acc = sum(correct[i] for i in members) / len(members)
            mean = sum(conf[i] for i in members) / len(members)
            total += len(members) / n * abs(acc - mean)
    return total


def test_ece_by_hand():
    # bins of width 1/15: 0.95 and 1.0 fall in bin 14, 0.5 in bin 7, 0.62 in bin 9
    conf = np.array([0.95, 1.0, 0.5, 0.62])
    correct = np.array([True, False, True, True])
    # bin 14: acc 1/2, conf 0.975 -> 2/4 * 0.475; bin 7: 1/4 * 0.5; bin 9: 1/4 * 0.38
    expected = 0.5 * 0.475 + 0.25 * 0.5 + 0.25 * 0.38
    assert calibration.ece(conf, correct) == pytest.approx(expected)
    bins = calibration.reliability(conf, correct)
    assert bins["count"][14] == 2 and bins["count"][7] == 1 and bins["count"][9] == 1 and sum(bins["count"]) == 4
    assert bins["accuracy"][14] == pytest.approx(0.5) and bins["confidence"][14] == pytest.approx(0.975)


def test_ece_matches_a_loop_reference():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.3, 1.0, 500)
    conf[:5] = [1.0, 1 / 15, 2 / 15, 0.5, 14 / 15]  # exact edges
    correct = rng.uniform(size=500) < conf
    assert calibration.ece(conf, correct) == pytest.approx(loop_ece(conf.tolist(), correct.tolist()))


def test_bin_edges():
    idx = calibration.bin_index(np.array([0.0, 1 / 15, 1 / 15 + 1e-9, 0.5, 14 / 15, 1.0 - 1e-12, 1.0]))
    assert idx.tolist() == [0, 0, 1, 7, 13, 14, 14]  # 1.0 in the last bin, an edge in the bin below it


def test_perfect_calibration_and_overconfidence():
    conf = np.full(10, 0.7)
    assert calibration.ece(conf, np.arange(10) < 7) == pytest.approx(0.0)
    assert calibration.ece(np.ones(4), np.array([True, False, False, False])) == pytest.approx(0.75)


def test_rank_classification_confidence_is_softmax_over_choice_scores():
    # two examples: example 0 has 2 choices, example 1 has 3 (sum scoring), then mean scoring
    lp = torch.tensor([-1.0, -2.0, -3.0, -0.5, -0.5])
    lengths = torch.tensor([1, 1, 1, 1, 2])
    owner = torch.tensor([0, 0, 1, 1, 1])
    choice, conf = tokens.rank(lp, lengths, owner, 2, "sum")
    assert choice == [0, 1]
    s0 = np.array([-1.0, -2.0])
    assert conf[0] == pytest.approx(np.exp(s0[0]) / np.exp(s0).sum())
    s1 = np.array([-3.0, -0.5, -0.5])
    assert conf[1] == pytest.approx(np.exp(-0.5) / np.exp(s1).sum())
    choice, conf = tokens.rank(lp, lengths, owner, 2, "mean")
    s1 = np.array([-3.0, -0.5, -0.25])  # per-token means
    assert choice[1] == 2 and conf[1] == pytest.approx(np.exp(-0.25) / np.exp(s1).sum())


def test_encoder_confidence_is_max_softmax():
    from transformers import BertConfig

    from kdlab.families import get_family

    family = get_family("encoder")
    torch.manual_seed(0)
    model = family.from_config(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32, num_labels=3))
    batch = {"input_ids": torch.randint(0, 50, (4, 6)), "attention_mask": torch.ones(4, 6, dtype=torch.long)}
    pred = family.predict(model, [batch], torch.device("cpu"), "fp32")
    with torch.no_grad():
        p = torch.softmax(model(**batch).logits, -1)
    assert pred.values.tolist() == p.argmax(-1).tolist()
    np.testing.assert_allclose(pred.confidence, p.max(-1).values.numpy(), rtol=1e-6)
