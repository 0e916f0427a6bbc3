"""The normalised example every task yields, whatever its source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Hashable, List, Optional, Union

# Label of an example whose split carries no gold label (GLUE/SuperGLUE test sets).
NO_LABEL = -1


@dataclass
class Example:
    """One model input.

    ``text_a`` / ``text_b`` are the sentence (pair) an encoder classifier reads.
    ``label`` is a class id in the task's ``label_names`` order (the Hugging Face
    ``glue`` / ``super_glue`` order), a float score for regression, or ``NO_LABEL``.
    ``idx`` is the example's index in its split: the row number for GLUE TSVs (as the
    Hugging Face loader counts it), the file's ``idx`` for SuperGLUE.
    ``group`` ties examples scored together: the question of a MultiRC answer option,
    the sentence pair of an AX-g example. ``choices`` holds the candidate answers of
    multiple-choice tasks (COPA alternatives, ReCoRD entities) and ``label`` then indexes
    into it; ``answers`` the gold answer strings (ReCoRD). ``fields`` keeps the task's
    raw fields (word and spans for WiC, question type for COPA, ...) for prompts.
    """

    text_a: str
    text_b: Optional[str]
    label: Union[int, float]
    idx: int
    group: Optional[Hashable] = None
    choices: List[str] = field(default_factory=list)
    answers: List[str] = field(default_factory=list)
    fields: Dict[str, Any] = field(default_factory=dict)

    @property
    def has_label(self) -> bool:
        return self.label != NO_LABEL
