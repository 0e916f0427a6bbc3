"""``load_split``: a task's split as normalised examples, optionally subsampled."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Dict, Hashable, List, Optional

import numpy as np

from kdlab.data.examples import NO_LABEL, Example
from kdlab.data.readers import ON_BAD_ROW
from kdlab.data.sources import read_rows
from kdlab.data.tasks import TaskSpec, get_task
from kdlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def load_split(
    name: str,
    split: str,
    data_dir: Optional[str] = None,
    max_samples: Optional[int] = None,
    seed: int = 0,
    stratified: bool = False,
    on_bad_row: str = "error",
) -> List[Example]:
    """The examples of ``split`` (``"train"``, ``"validation"``, ``"validation_matched"``, ...).

    ``data_dir`` None reads the hub; otherwise see ``kdlab.data.sources`` for the order in
    which files are looked for. ``max_samples`` keeps a random subset drawn under ``seed``
    (whole groups for grouped tasks such as MultiRC), in file order; ``stratified`` keeps
    the label proportions. A diagnostic set's ``train`` split is its ``train_task``'s
    (AX: MNLI's, AX-b and AX-g: RTE's), as the benchmarks define them.
    """
    spec = get_task(name)
    if split == "train" and spec.train_task is not None:
        try:
            return load_split(spec.train_task, split, data_dir, max_samples, seed, stratified, on_bad_row)
        except DataError as e:
            raise DataError(f"{spec.name} is trained on {spec.train_task}: {e}") from e
    spec.split_file(split)
    if on_bad_row not in ON_BAD_ROW:
        raise ConfigError(
            f"dataset.on_bad_row={on_bad_row!r}; valid values: {', '.join(ON_BAD_ROW)}"
        )
    if max_samples is not None and max_samples <= 0:
        raise ConfigError(f"max_samples must be positive or null, got {max_samples}")
    rows, origin = read_rows(spec, split, data_dir, on_bad_row)
    examples = []
    for row in rows:
        try:
            ex = spec.to_example(row)
        except KeyError as e:
            raise DataError(f"{origin}: a row of {spec.name} has no field {e.args[0]!r}") from None
        check_label(spec, ex, origin)
        examples.append(ex)
    if not examples:
        raise DataError(f"{origin}: no examples in {spec.name} split {split!r}")
    if max_samples is not None and max_samples < len(examples):
        examples = subsample(examples, max_samples, seed, stratified)
    return examples


def check_label(spec: TaskSpec, ex: Example, origin: str) -> None:
    if spec.is_regression or ex.label == NO_LABEL:
        return
    n = len(ex.choices) if spec.kind == "multiple_choice" else spec.num_labels
    if not (isinstance(ex.label, int) and 0 <= ex.label < n):
        raise DataError(
            f"{origin}: example idx={ex.idx} of {spec.name} has label {ex.label!r}; "
            f"expected an id in 0..{n - 1} ({', '.join(spec.label_names)}) or {NO_LABEL}"
        )


def subsample(examples: List[Example], k: int, seed: int, stratified: bool) -> List[Example]:
    """``k`` examples drawn under ``seed``, kept in their original order.

    Grouped examples (MultiRC answer options of one question) are drawn whole, by group,
    until at least ``k`` examples are taken. ``stratified`` draws from each label (for
    regression, each integer score bin) in proportion to its size.
    """
    rng = np.random.RandomState(seed)
    if any(ex.group is not None for ex in examples):
        if stratified:
            log.warning(
                "stratified subsampling is not defined for grouped tasks; drawing whole groups"
            )
        units = _buckets(examples, lambda ex: ex.group)
        order = rng.permutation(len(units))
        keep: List[int] = []
        for u in order:
            if len(keep) >= k:
                break
            keep.extend(units[u])
        return [examples[i] for i in sorted(keep)]
    if not stratified:
        return [examples[i] for i in sorted(rng.permutation(len(examples))[:k])]
    strata = _buckets(
        examples, lambda ex: int(ex.label) if isinstance(ex.label, float) else ex.label
    )
    sizes = np.array([len(s) for s in strata], dtype=float)
    quota = sizes * k / sizes.sum()
    take = np.floor(quota).astype(int)
    # largest remainders get the examples that flooring left over
    for i in np.argsort(-(quota - take), kind="stable")[: k - take.sum()]:
        take[i] += 1
    keep = []
    for members, n in zip(strata, take, strict=True):
        keep.extend(np.asarray(members)[rng.permutation(len(members))[:n]].tolist())
    return [examples[i] for i in sorted(keep)]


def _buckets(examples: List[Example], key) -> List[List[int]]:
    out: Dict[Hashable, List[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        out[key(ex)].append(i)
    return [out[b] for b in sorted(out, key=str)]
