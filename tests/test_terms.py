"""The term protocol (kdlab.terms): the objective gives each term what it declares it
reads and nothing else, asks every term for its hooks without probing, reads family facts
from the family's declared capabilities, and one registry holds every term."""

from __future__ import annotations

import inspect
from typing import Any, List, Optional

import pytest
import torch

from kdlab import objective as objective_module
from kdlab.errors import ConfigError
from kdlab.families import get_family
from kdlab.families.base import Outputs, WrappedFamily
from kdlab.objective import Objective, WeightedTerm, build_objective
from kdlab.terms import LOGITS, TERMS, LogitTerm, PreStage, Reads, Term
from tests.conftest import compose_config


class Spy(Term):
    """Records the Outputs and labels it is given; value 0 with a gradient path."""

    def __init__(self, reads: Reads) -> None:
        super().__init__()
        self.reads = reads
        self.seen: List[tuple] = []

    def compute(self, student: Outputs, teacher: Outputs, labels: Optional[torch.Tensor]) -> torch.Tensor:
        self.seen.append((student, teacher, labels))
        return torch.zeros(())


def full_outputs(seed: int) -> Outputs:
    g = torch.Generator().manual_seed(seed)
    hidden = {"encoder": tuple(torch.randn(2, 3, 4, generator=g) for _ in range(2))}
    attentions = {"encoder": (torch.rand(2, 1, 3, 3, generator=g),)}
    return Outputs(torch.randn(2, 3, 5, generator=g), mask=torch.ones(2, 3, dtype=torch.bool),
                   hidden_states=hidden, attentions=attentions,
                   feature_masks={"encoder": torch.ones(2, 3, dtype=torch.bool)})


def test_a_term_gets_exactly_what_it_declares_it_reads():
    hidden, logits_only = Spy(Reads.HIDDEN_STATES), Spy(LOGITS | Reads.TOKEN_MASK)
    objective = Objective(0.0, [WeightedTerm("hid", 1.0, hidden), WeightedTerm("logits", 1.0, logits_only)])
    assert objective.features == {"hidden_states"}  # the family is asked for hidden states only
    student, teacher = full_outputs(0), full_outputs(1)
    objective(student, torch.zeros(()), teacher, labels=torch.tensor([0, 1]))

    (s, t, labels), = hidden.seen
    assert s.hidden_states is student.hidden_states and t.hidden_states is teacher.hidden_states
    assert s.feature_masks is student.feature_masks
    assert s.attentions is None and s.logits is None and s.mask is None and t.mask is None and labels is None

    (s, t, labels), = logits_only.seen
    assert s.hidden_states is None and t.hidden_states is None and s.attentions is None and s.feature_masks is None
    torch.testing.assert_close(s.logits, student.logits)
    assert s.mask is student.mask and t.mask is None and labels is None  # no Reads.TEACHER_MASK
    assert not t.logits.requires_grad


def test_an_unweighted_feature_term_asks_for_nothing():
    objective = Objective(0.0, [WeightedTerm("att", 0.0, Spy(Reads.ATTENTIONS))])
    assert objective.features == frozenset()


def test_label_terms_get_the_labelled_rows_as_their_row_mask():
    spy = Spy(LOGITS | Reads.LABELS)
    objective = Objective(0.0, [WeightedTerm("lab", 1.0, spy)])
    student, teacher = Outputs(torch.randn(3, 4)), Outputs(torch.randn(3, 4))
    has_label = torch.tensor([True, False, True])
    objective(student, torch.zeros(()), teacher, labels=torch.tensor([0, 7, 2]), has_label=has_label)
    (s, t, labels), = spy.seen
    assert s.mask is has_label and t.mask is None  # rows masked on the device, not selected
    assert labels.tolist() == [0, 0, 2] and s.logits.shape == (3, 4)  # a transfer row's label is never read


def test_unknown_term_name_lists_the_valid_names_of_every_kind():
    for override in ("divergence.name=nope", "+objective.terms={x: {name: nope, weight: 1.0}}"):
        with pytest.raises(ConfigError) as e:
            build_objective(compose_config([override]))
        message = str(e.value)
        assert "unknown objective term 'nope'" in message
        assert all(name in message for name in ("kl", "sinkhorn", "dkd", "hidden", "ted", "uld"))


class Gap(LogitTerm):
    """``scale * mean |z_s - z_t|``: a term defined outside kdlab, with a pre-stage."""

    ran: List[str] = []

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.families: List[Any] = []

    def check_setting(self, task: Any, family: Any) -> None:
        self.families.append(family)

    def pre_stages(self):
        return (PreStage("gap_warmup", lambda teacher, student, ctx: self.ran.append("gap_warmup")),)

    def forward(self, z_s: torch.Tensor, z_t: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.scale * (z_s - z_t).abs().mean()


@pytest.fixture
def gap_registered():
    TERMS.register("test_gap")(Gap)
    yield
    del TERMS._entries["test_gap"]


def test_a_term_defined_outside_registers_and_runs_through_build_objective(gap_registered):
    cfg = compose_config(["objective.alpha=0", "divergence=none",
                          "+objective.terms={gap: {name: test_gap, weight: 0.5, params: {scale: 2.0}}}"])
    objective = build_objective(cfg)
    gap = objective.terms[0].module
    assert isinstance(gap, Gap) and gap.scale == 2.0
    assert gap.families and gap.families[0].class_logits  # asked with the family object, not its name
    z_s, z_t = torch.randn(4, 2), torch.randn(4, 2)
    loss, parts = objective(Outputs(z_s), torch.tensor(0.0), Outputs(z_t))
    torch.testing.assert_close(parts["gap"], 2.0 * (z_s - z_t).abs().mean())
    torch.testing.assert_close(loss, torch.tensor(0.0) + 0.5 * parts["gap"])  # ce_weight = 1 - alpha, CE 0
    assert [s.name for s in objective.pre_stages()] == ["gap_warmup"]
    with pytest.raises(ConfigError, match="has no parameter"):
        build_objective(compose_config(["+objective.terms={gap: {name: test_gap, params: {scal: 2.0}}}"]))


def test_only_term_classes_register():
    with pytest.raises(TypeError, match="subclass of kdlab.terms.Term"):
        TERMS.register("not_a_term")(torch.nn.Module)
    assert "not_a_term" not in TERMS


class Bare(torch.nn.Module):
    """A plain module: no bind, no set_progress, no declarations."""

    def forward(self, z_s: torch.Tensor, z_t: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return (z_s - z_t).pow(2).mean()


def test_a_term_without_optional_hooks_runs_every_step_of_the_objective():
    objective = Objective(0.5, [WeightedTerm("bare", 1.0, Bare())])
    objective.bind(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), ("encoder",))
    objective.set_progress(0.5, 1, 2)
    assert objective.pre_stages() == [] and objective.shared_tokenizer_terms(get_family("causal")) == ["bare"]
    z_s, z_t = torch.randn(3, 2), torch.randn(3, 2)
    _, parts = objective(Outputs(z_s), torch.tensor(1.0), Outputs(z_t))
    torch.testing.assert_close(parts["bare"], (z_s - z_t).pow(2).mean())


def test_the_objective_never_probes_its_terms():
    source = inspect.getsource(objective_module)
    for probe in ("hasattr(", "getattr(", "LayerMatch", 'startswith("objective.terms.', '"encoder"'):
        assert probe not in source, probe


class Renamed(WrappedFamily):
    """The encoder family under another name: facts come from its capabilities, not its name."""

    def __init__(self) -> None:
        super().__init__(get_family("encoder"))
        self.name = "renamed"

    def forward(self, *args: Any) -> Any:
        return self.base.forward(*args)

    def supervised_loss(self, *args: Any) -> Any:
        return self.base.supervised_loss(*args)

    def predict(self, *args: Any) -> Any:
        return self.base.predict(*args)


def test_family_facts_come_from_declared_capabilities():
    objective = build_objective(compose_config(["experiment=smoke"]))
    assert objective.shared_tokenizer_terms(Renamed()) == []  # class logits: any tokenizers
    assert objective.shared_tokenizer_terms(get_family("seq2seq")) == [t.name for t in objective.terms]
