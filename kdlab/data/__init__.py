"""The data layer: every GLUE and SuperGLUE task, its metrics and its model inputs.

``get_task(name)`` gives a task's ``TaskSpec``; ``load_split(name, split, ...)`` its
normalised ``Example`` list; ``compute_metrics(name, predictions, references)`` its
official scores.
"""

# register the tasks: GLUE, SuperGLUE, and every module of kdlab/data/local/ (local files)
from kdlab.data import glue, local, superglue  # noqa: F401
from kdlab.data.examples import NO_LABEL, Example
from kdlab.data.loader import load_split
from kdlab.data.metrics import compute_metrics, score
from kdlab.data.tasks import TASKS, TaskSpec, get_task, task_names

__all__ = [
    "NO_LABEL",
    "TASKS",
    "Example",
    "TaskSpec",
    "compute_metrics",
    "get_task",
    "load_split",
    "score",
    "task_names",
]
