"""Distillation methods of the literature as registered objective terms.

One file per family of methods:

- ``adaptive``: AKL, adaptive KL (a divergence: ``divergence=akl``);
- ``universal``: ULD, universal logit distillation across vocabularies (``divergence=uld``);
- ``labelled``: terms that read gold labels: DKD, PLD, DEMD (``divergence=labels/<name>``);
- ``layers``: intermediate-layer terms: DistilBERT's cosine loss, Patient KD;
- ``ted``: TED's task-aware filters (a feature term with a stage I of its own).

Skew KL / skew reverse KL (DistiLLM) and the generalized JSD of GKD are the divergences
``skew_kl``, ``skew_rkl`` and ``js`` of ``kdlab.divergences.fdiv``.

Label-aware terms do not fit the divergence interface ``div(z_s, z_t, mask=None)``: they
live in their own registry and are called with ``labels=`` by the objective (they declare
``needs_labels = True``).
"""

from __future__ import annotations

from kdlab.registry import Registry, discover

LABEL_TERMS: Registry = Registry("label-aware term")

discover(__name__)  # every file of this folder registers its terms: no list to keep
