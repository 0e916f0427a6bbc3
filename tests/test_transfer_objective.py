"""Transfer examples (no gold label) never reach cross-entropy or a label-based term; every
teacher-based term reads them. The transfer rows carry valid but wrong labels here, so a
leak shows as a changed value or gradient, not as an error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdlab.batching import WithTransfer
from kdlab.families import get_family
from kdlab.families.base import Outputs
from kdlab.methods import LABEL_TERMS
from kdlab.objective import Objective, Term, build_objective
from tests.conftest import compose_config

torch.manual_seed(0)
HAS_LABEL = torch.tensor([True, False, True, False, False, True])
GOLD = torch.tensor([1, 0, 2, 0, 0, 1])  # gold on labelled rows


def batch_with_garbage_labels():
    labels = GOLD.clone()
    labels[~HAS_LABEL] = torch.tensor([2, 1, 2])  # wrong, but valid class ids
    return {"labels": labels, "has_label": HAS_LABEL}


def encoder_objective(ce_weight: float) -> Objective:
    cfg = compose_config(["output_dir=/tmp/x", "divergence=sinkhorn", "objective.alpha=0.9"])
    obj = build_objective(cfg)
    return Objective(ce_weight, obj.terms)


def test_ce_reads_labelled_rows_only_and_transfer_gradients_come_from_teacher_terms():
    family = get_family("encoder")
    z_t = torch.randn(6, 3)
    batch = batch_with_garbage_labels()

    def grads(ce_weight):
        z = torch.randn(6, 3, generator=torch.Generator().manual_seed(1)).requires_grad_()
        out = Outputs(z)
        ce = family.supervised_loss(out, batch)
        total, parts = encoder_objective(ce_weight)(out, ce, Outputs(z_t), labels=batch["labels"],
                                                    has_label=batch["has_label"])
        total.backward()
        return z, ce, parts, z.grad

    z, ce, parts, g_full = grads(0.1)
    expected = F.cross_entropy(z.detach()[HAS_LABEL], GOLD[HAS_LABEL])
    assert torch.allclose(ce, expected)
    assert not torch.allclose(ce, F.cross_entropy(z.detach(), batch["labels"]))  # the garbage would change it
    assert {"kd", "sinkhorn", "ce"} <= set(parts)
    _, _, _, g_teacher_only = grads(0.0)
    # transfer rows: the same gradient with and without CE; labelled rows: CE adds to it
    assert torch.allclose(g_full[~HAS_LABEL], g_teacher_only[~HAS_LABEL], atol=1e-7)
    assert not torch.allclose(g_full[HAS_LABEL], g_teacher_only[HAS_LABEL])
    assert g_teacher_only[~HAS_LABEL].abs().sum() > 0  # teacher terms do read transfer rows


def test_a_batch_without_labelled_rows_gives_zero_ce_not_nan():
    z = torch.randn(3, 2, requires_grad=True)
    batch = {"labels": torch.tensor([1, 0, 1]), "has_label": torch.zeros(3, dtype=torch.bool)}
    ce = get_family("encoder").supervised_loss(Outputs(z), batch)
    assert ce.item() == 0.0
    ce.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_token_families_mask_transfer_rows_out_of_the_token_cross_entropy():
    logits = torch.randn(4, 3, 11, requires_grad=True)  # [B, T, V]
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    targets = torch.randint(0, 11, (4, 3))
    has_label = torch.tensor([True, False, True, False])
    for name in ("seq2seq", "causal"):
        ce = get_family(name).supervised_loss(Outputs(logits, mask), {"target_ids": targets, "has_label": has_label})
        keep = mask & has_label[:, None]
        assert torch.allclose(ce, F.cross_entropy(logits[keep], targets[keep]))
        (grad,) = torch.autograd.grad(ce, logits)
        assert torch.equal(grad[~has_label], torch.zeros_like(grad[~has_label]))


@pytest.mark.parametrize("name, params", [("dkd", {"warmup": 1.0}), ("pld", {}), ("demd", {})])
def test_label_terms_see_labelled_rows_only(name, params):
    term = LABEL_TERMS.build(name, **params)
    if name == "demd":
        term.set_embeddings(torch.randn(3, 8))
    obj = Objective(0.0, [Term(name, 1.0, term)])
    z_s, z_t = torch.randn(6, 3), torch.randn(6, 3)
    batch = batch_with_garbage_labels()
    total, _ = obj(Outputs(z_s), torch.zeros(()), Outputs(z_t), labels=batch["labels"], has_label=HAS_LABEL)
    alone = term(z_s[HAS_LABEL], z_t[HAS_LABEL], labels=GOLD[HAS_LABEL])
    assert torch.allclose(total, alone)
    none, _ = obj(Outputs(z_s), torch.zeros(()), Outputs(z_t), labels=batch["labels"],
                  has_label=torch.zeros(6, dtype=torch.bool))
    assert none.item() == 0.0



@pytest.mark.parametrize("name, params", [("ce", {}), ("dkd", {"warmup": 1.0}), ("pld", {}), ("demd", {})])
def test_masked_rows_give_the_selected_rows_value_and_gradient_in_float64(name, params):
    """Transfer rows are masked on the device, not selected (no host synchronisation): value
    and gradient equal those of the labelled rows alone, in float64, whatever the transfer
    rows' labels hold (here -1, which no loss accepts)."""
    g = torch.Generator().manual_seed(3)
    z_s = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z_t = torch.randn(6, 3, generator=g, dtype=torch.float64)
    labels = torch.where(HAS_LABEL, GOLD, -1)
    if name == "ce":
        def value(z, zt, y, keep):
            return get_family("encoder").supervised_loss(Outputs(z), {"labels": y, "has_label": keep}
                                                         if keep is not None else {"labels": y})
    else:
        term = LABEL_TERMS.build(name, **params)
        if name == "demd":
            term.set_embeddings(torch.randn(3, 8, generator=g, dtype=torch.float64))
        obj = Objective(0.0, [Term(name, 1.0, term)])

        def value(z, zt, y, keep):
            return obj(Outputs(z), torch.zeros((), dtype=torch.float64), Outputs(zt), labels=y, has_label=keep)[0]

    masked = value(z_s, z_t, labels, HAS_LABEL)
    (g_masked,) = torch.autograd.grad(masked, z_s)
    rows = z_s[HAS_LABEL].detach().requires_grad_(True)
    selected = value(rows, z_t[HAS_LABEL], GOLD[HAS_LABEL], None)
    (g_rows,) = torch.autograd.grad(selected, rows)
    torch.testing.assert_close(masked, selected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_masked[HAS_LABEL], g_rows, rtol=1e-12, atol=1e-14)
    assert torch.equal(g_masked[~HAS_LABEL], torch.zeros_like(g_masked[~HAS_LABEL]))

class Items(torch.utils.data.Dataset):
    def __init__(self, values, labels):
        self.values, self.labels = values, torch.tensor(labels)
        self.examples = list(values)

    def __len__(self):
        return len(self.values)

    def __getitem__(self, i):
        return {"x": self.values[i], "labels": self.labels[i], "index": i}

    def collate(self, rows):
        return {"x": torch.tensor([r["x"] for r in rows]), "labels": torch.stack([r["labels"] for r in rows]),
                "index": torch.tensor([r["index"] for r in rows])}


def test_with_transfer_counts_indices_over_both_parts_and_marks_transfer_rows():
    ds = WithTransfer(Items([10, 11], [1, 0]), Items([20, 21, 22], [-1, -1, -1]))
    assert len(ds) == 5 and ds.labels.tolist() == [1, 0, -1, -1, -1]
    batch = ds.collate([ds[i] for i in (4, 0, 2)])
    assert batch["x"].tolist() == [22, 10, 20]
    assert batch["index"].tolist() == [4, 0, 2]
    assert batch["has_label"].tolist() == [False, True, False]
