"""Transfer data: inputs without gold labels that the student learns from the teacher only.

Distillation pays off when the teacher labels text the labelled set does not cover
(Tang et al. 2019's augmented transfer set; DistilBERT and Turc et al. 2019's unlabelled
in-domain text). The ``transfer`` group adds such examples to the distilled student's
training set:

- ``unlabelled``: the task's train split beyond the labelled budget, labels dropped: up to
  ``transfer.max_samples`` rows drawn under the run's seed, disjoint from the labelled
  rows (``dataset.max_train_samples``) and from the rows the teacher's fine-tuning recipe
  draws (``teacher.finetune.max_train_samples``), so that no label the run was not given
  reaches the student through the teacher;
- ``files``: raw inputs from local files, ``.tsv`` / ``.jsonl`` in the task's own format
  (the columns or fields its reader expects; labels absent or ignored) or ``.txt`` with
  one text per line (single-sentence tasks);
- ``augment``: seeded perturbed copies of the labelled inputs (``kdlab.data.augment``).

Every transfer example has ``label = NO_LABEL``; the batch marks it with
``has_label = False``, so cross-entropy and label-based terms skip it and every
teacher-based term uses it. Regression tasks and tasks without a train split are refused.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, List, Sequence

from kdlab.data import augment as aug
from kdlab.data.examples import NO_LABEL, Example
from kdlab.data.loader import load_split, subsample
from kdlab.data.readers import JsonlFormat, Labels, TsvFormat
from kdlab.data.tasks import TaskSpec, get_task
from kdlab.errors import ConfigError, DataError
from kdlab.terms import Reads

KINDS = ("none", "unlabelled", "augment", "files")
SUFFIXES = (".tsv", ".jsonl", ".txt")


def enabled(cfg: Any) -> bool:
    return cfg.transfer.name != "none"


def check(cfg: Any, objective: Any) -> None:
    """Config-time checks of ``cfg.transfer`` against the task and the objective (an
    ``kdlab.objective.Objective``), before any data or model is loaded."""
    tr = cfg.transfer
    if tr.name not in KINDS:
        raise ConfigError(f"transfer.name={tr.name!r}: valid values are {', '.join(KINDS)}")
    if tr.files and tr.name != "files":
        raise ConfigError(f"transfer.files is set but transfer={tr.name}; use transfer=files to read them")
    if not enabled(cfg):
        return
    task = get_task(cfg.dataset.name)
    if task.kind != "classification":
        raise ConfigError(f"transfer={tr.name}: dataset={task.name} is a {task.kind} task; transfer data "
                          "is supported for classification tasks only (the teacher's class distribution "
                          "is what the student learns on it)")
    if task.train_split is None:
        raise ConfigError(f"transfer={tr.name}: dataset={task.name} has no train split")
    if tr.max_samples is not None and tr.max_samples <= 0:
        raise ConfigError(f"transfer.max_samples={tr.max_samples}: must be positive or null")
    if tr.name == "unlabelled" and cfg.dataset.max_train_samples is None:
        raise ConfigError("transfer=unlabelled takes the train rows beyond the labelled budget, but "
                          "dataset.max_train_samples=null labels them all; set dataset.max_train_samples")
    if tr.name == "augment":
        aug.check(tr.augment)
    if tr.name == "files":
        if not tr.files:
            raise ConfigError("transfer=files needs transfer.files, e.g. transfer.files='[extra.txt]'")
        for f in tr.files:
            _check_suffix(task, str(f))
    teacher_terms = [t.name for t in objective.terms if t.weight > 0 and Reads.LABELS not in t.module.reads]
    if not teacher_terms:
        raise ConfigError(f"transfer={tr.name}: no weighted objective term learns from the teacher without "
                          "gold labels (KD with objective.alpha > 0, a divergence, a feature term), so the "
                          "transfer examples would teach nothing; add one or use transfer=none")


def _train_format(task: TaskSpec) -> Any:
    """The format of the rows the task trains on (a diagnostic set's: its train task's)."""
    source = get_task(task.train_task) if task.train_task else task
    return source.split_file("train").format


def single_sentence(task: TaskSpec) -> bool:
    fmt = _train_format(task)
    return isinstance(fmt, TsvFormat) and len(fmt.fields) == 1


def _check_suffix(task: TaskSpec, name: str) -> None:
    suffix = Path(name).suffix
    fmt = _train_format(task)
    own = ".tsv" if isinstance(fmt, TsvFormat) else ".jsonl"
    valid = [own] + ([".txt"] if single_sentence(task) else [])
    if suffix not in valid:
        raise ConfigError(f"transfer.files: {name}: {task.name} reads {' or '.join(valid)} files "
                          f"({own}: its own format; .txt, one text per line, for single-sentence tasks only)")


def prepare(cfg: Any, labelled: Sequence[Example], teacher_rows: Sequence[Example]) -> Callable[[Any], List[Example]]:
    """Read and check the transfer inputs now (before any model is loaded); returns a
    function of the teacher's tokenizer that gives the transfer examples (``augment``
    needs its mask token)."""
    tr = cfg.transfer
    task = get_task(cfg.dataset.name)
    if tr.name == "none":
        return lambda tokenizer: []
    if tr.name == "augment":
        with_fields = next((ex for ex in labelled if ex.fields), None)
        if with_fields is not None:
            raise ConfigError(f"transfer=augment perturbs the texts of an example, but {task.name} examples "
                              f"carry raw fields ({', '.join(with_fields.fields)}) the prompts also read; "
                              "use transfer=unlabelled or files")
        return lambda tokenizer: aug.augment(labelled, tr.augment, cfg.seed, mask_token(tokenizer), tr.max_samples)
    examples = unlabelled(cfg, labelled, teacher_rows) if tr.name == "unlabelled" else \
        [ex for f in tr.files for ex in read_file(task, Path(str(f)).expanduser())]
    if tr.max_samples is not None and tr.max_samples < len(examples):
        examples = subsample(examples, tr.max_samples, cfg.seed, stratified=False)
    return lambda tokenizer: examples


def unlabelled(cfg: Any, labelled: Sequence[Example], teacher_rows: Sequence[Example]) -> List[Example]:
    """The train rows outside ``labelled`` and ``teacher_rows``, labels dropped."""
    d = cfg.dataset
    seen = {ex.idx for ex in labelled} | {ex.idx for ex in teacher_rows}
    rows = load_split(cfg.dataset.name, "train", data_dir=d.data_dir, on_bad_row=d.on_bad_row)
    pool = [replace(ex, label=NO_LABEL) for ex in rows if ex.idx not in seen]
    if not pool:
        raise ConfigError(f"transfer=unlabelled: every train row of {cfg.dataset.name} is labelled for the "
                          "student or the teacher; lower dataset.max_train_samples or "
                          "teacher.finetune.max_train_samples")
    return pool


def mask_token(tokenizer: Any) -> str:
    for token in (tokenizer.mask_token, tokenizer.unk_token):
        if token:
            return str(token)
    raise ConfigError(f"transfer=augment masks words with the teacher tokenizer's mask or unknown token; "
                      f"the {type(tokenizer).__name__} has neither")


def _text(path: Path) -> str:
    """The file as UTF-8 text; a missing, empty or undecodable file names itself (and the line)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file (transfer.files)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 text (transfer.files)") from None
    if not text.strip():
        raise DataError(f"{path}: empty file (transfer.files)")
    return text


def read_file(task: TaskSpec, path: Path) -> List[Example]:
    """Unlabelled examples of ``task`` from one transfer file (format by suffix)."""
    text = _text(path)
    if path.suffix == ".txt":
        return [Example(text_a=line.strip(), text_b=None, label=NO_LABEL, idx=i)
                for i, line in enumerate(text.splitlines()) if line.strip()]
    fmt = _train_format(task)
    labels = Labels(raw=task.raw_labels, required=False)
    if isinstance(fmt, TsvFormat):  # any label column is ignored
        rows = replace(fmt, label=None).read(path, labels)
    else:
        assert isinstance(fmt, JsonlFormat)
        rows = fmt.read(path, labels)
    out = []
    for row in rows:
        try:
            out.append(replace(task.to_example(row), label=NO_LABEL))
        except KeyError as e:
            raise DataError(f"{path}: a row of {task.name} has no field {e.args[0]!r}") from None
    if not out:
        raise DataError(f"{path}: no examples (transfer.files); expected {fmt.describe() if isinstance(fmt, TsvFormat) else fmt.expected}")
    return out
