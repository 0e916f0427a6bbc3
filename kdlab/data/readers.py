"""Readers of the original distribution formats: GLUE TSV and SuperGLUE JSON lines.

Both return *rows*: dicts with the field names and label ids of the Hugging Face
``glue`` / ``super_glue`` datasets, so that every source feeds the same converter.
A row that does not fit the expected form raises ``DataError`` naming the file, the
line and the expected form; with ``on_bad_row="skip"`` such rows are dropped and their
number is logged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from kdlab.data.examples import NO_LABEL
from kdlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Row = Dict[str, Any]
ON_BAD_ROW = ("error", "skip")


class BadRow(Exception):
    """Raised by row parsers; the reader adds the file and line number."""


@dataclass(frozen=True)
class Labels:
    """How a file spells its labels: raw value -> class id, or a float score."""

    raw: Optional[Mapping[Any, int]] = None  # None: regression score
    required: bool = True  # False for test splits, whose labels are hidden

    def parse(self, value: Any) -> Union[int, float]:
        if self.raw is None:
            try:
                return float(value)
            except (TypeError, ValueError):
                raise BadRow(f"label {value!r} is not a number") from None
        # bool is an int subclass (True == 1): accept booleans only where the format spells
        # labels as booleans, and integers only where it spells them as integers.
        spelled_bool = any(isinstance(k, bool) for k in self.raw)
        if isinstance(value, bool) == spelled_bool and value in self.raw:
            return self.raw[value]
        valid = ", ".join(repr(k) for k in self.raw)
        raise BadRow(f"unknown label {value!r} (expected one of {valid})")

    def missing(self) -> Union[int, float]:
        if self.required:
            raise BadRow("no label (this split must be labelled)")
        return float(NO_LABEL) if self.raw is None else NO_LABEL


def _check_mode(on_bad_row: str) -> None:
    if on_bad_row not in ON_BAD_ROW:
        raise ConfigError(
            f"dataset.on_bad_row={on_bad_row!r}; valid values: {', '.join(ON_BAD_ROW)}"
        )


def _report(path: Path, bad: List[str], on_bad_row: str, expected: str) -> None:
    if not bad:
        return
    if on_bad_row == "error":
        raise DataError(f"{path}: {bad[0]}. Expected {expected}.")
    log.warning(
        "skipped %d malformed row(s) of %s (dataset.on_bad_row=skip); first: %s",
        len(bad),
        path,
        bad[0],
    )


@dataclass(frozen=True)
class TsvFormat:
    """A GLUE TSV file: tab-separated, no quoting (``csv.QUOTE_NONE``), UTF-8.

    ``fields`` maps each output field to its column: a header name, or for a file
    without header (CoLA train/dev) a name from ``names``. ``label`` is the label
    column (absent from test files).
    """

    fields: Mapping[str, str]
    label: Optional[str]
    header: bool = True
    names: Sequence[str] = ()

    def describe(self) -> str:
        if self.header:
            cols = list(self.fields.values()) + ([self.label] if self.label else [])
            return "a GLUE TSV file with a header row naming the columns " + ", ".join(cols)
        return "a GLUE TSV file without header, columns: " + ", ".join(self.names)

    def read(self, path: Path, labels: Labels, on_bad_row: str = "error") -> List[Row]:
        _check_mode(on_bad_row)
        # utf-8-sig: the MRPC files begin with a byte-order mark.
        lines = path.read_text(encoding="utf-8-sig").split("\n")
        while lines and lines[-1].strip("\r") == "":
            lines.pop()
        first = 1
        if self.header:
            if not lines:
                raise DataError(f"{path}: empty file. Expected {self.describe()}.")
            names = lines[0].rstrip("\r").split("\t")
            first = 2
        else:
            names = list(self.names)
        wanted = list(self.fields.values())
        missing = [c for c in wanted if c not in names]
        if self.label is not None and self.label not in names and labels.required:
            missing.append(self.label)
        if missing:
            raise DataError(
                f"{path}: line 1: no column(s) {', '.join(missing)} in {names}. "
                f"Expected {self.describe()}."
            )
        pos = {n: i for i, n in enumerate(names)}
        rows: List[Row] = []
        bad: List[str] = []
        for lineno, line in enumerate(lines[first - 1 :], start=first):
            cells = line.rstrip("\r").split("\t")
            try:
                if len(cells) != len(names):
                    raise BadRow(f"{len(cells)} columns, expected {len(names)}")
                row: Row = {f: cells[pos[c]] for f, c in self.fields.items()}
                if self.label is not None and self.label in pos:
                    row["label"] = labels.parse(cells[pos[self.label]])
                else:
                    row["label"] = labels.missing()
            except BadRow as e:
                bad.append(f"line {lineno}: {e}")
                continue
            row["idx"] = len(rows) + len(bad)  # the row's position, as the hub loader counts
            rows.append(row)
        _report(path, bad, on_bad_row, self.describe())
        return rows


@dataclass(frozen=True)
class JsonlFormat:
    """A SuperGLUE JSON-lines file: one JSON object per line.

    ``to_rows`` turns one object into one or more rows (MultiRC and ReCoRD nest several
    examples in one line); it raises ``BadRow`` (or KeyError/TypeError for a missing or
    ill-typed field) when the object does not fit ``expected``.
    """

    to_rows: Callable[[Dict[str, Any], Labels], List[Row]]
    expected: str

    def read(self, path: Path, labels: Labels, on_bad_row: str = "error") -> List[Row]:
        _check_mode(on_bad_row)
        rows: List[Row] = []
        bad: List[str] = []
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    if not isinstance(obj, dict):
                        raise BadRow(f"a JSON {type(obj).__name__}, not an object")
                    rows.extend(self.to_rows(obj, labels))
                except json.JSONDecodeError as e:
                    bad.append(f"line {lineno}: invalid JSON ({e.msg} at column {e.colno})")
                except KeyError as e:
                    bad.append(f"line {lineno}: missing field {e.args[0]!r}")
                except (BadRow, TypeError, ValueError) as e:
                    bad.append(f"line {lineno}: {e}")
        _report(path, bad, on_bad_row, self.expected)
        return rows


FileFormat = Union[TsvFormat, JsonlFormat]
