"""Distillation methods of the literature as registered objective terms.

One file per family of methods:

- ``adaptive``: AKL, adaptive KL (a divergence: ``divergence=akl``);
- ``universal``: ULD, universal logit distillation across vocabularies (``divergence=uld``);
- ``labelled``: terms that read gold labels: DKD, PLD, DEMD (``divergence=labels/<name>``);
- ``layers``: intermediate-layer terms: DistilBERT's cosine loss, Patient KD;
- ``ted``: TED's task-aware filters (a feature term with a stage I of its own).

Skew KL / skew reverse KL (DistiLLM) and the generalized JSD of GKD are the divergences
``skew_kl``, ``skew_rkl`` and ``js`` of ``kdlab.divergences.fdiv``.

Every term registers in ``kdlab.terms.TERMS`` (``LABEL_TERMS`` is that registry). Label-aware
terms declare ``Reads.LABELS``: the objective calls them with ``labels=``.
"""

from __future__ import annotations

from kdlab.registry import discover
from kdlab.terms import TERMS, TermRegistry

LABEL_TERMS: TermRegistry = TERMS

discover(__name__)  # every file of this folder registers its terms: no list to keep
