"""Scoring requests: the AML `input_data` layouts, checked against the data contract.

A managed online endpoint must answer a bad request with a reason the caller can act on, and
must never hand the model a row it was not trained to see (a string where a number belongs, a
NaN, an age of 400, a payer code nobody has heard of). Every check reads
`data_checks/readmission_schema.py`, the same contract the generator and the data gate use.

The checks run on every request, so the common case (a valid body) goes through C-level
builtins (`set`, `map`, `min`, `max`) and only a failed check walks the rows to name the first
offending one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, overload

import numpy as np
import orjson

from data_checks.readmission_schema import CATEGORICAL_COLUMNS, FEATURES, NUMERIC_COLUMNS

MAX_ROWS = 10_000
"""Rows per request; larger scoring jobs belong in a batch job, not an online endpoint."""
MAX_BODY_BYTES = 5 * 1024 * 1024
"""Request body limit (AML's managed endpoints cap payloads in the same range)."""

_NUMERIC = {c.name: c for c in NUMERIC_COLUMNS}
_CATEGORIES = {c.name: frozenset(c.values) for c in CATEGORICAL_COLUMNS}
_CATEGORY_LISTS = {c.name: ", ".join(c.values) for c in CATEGORICAL_COLUMNS}
_FEATURE_SET = frozenset(FEATURES)
_NUMBER_TYPES = frozenset({int, float})
_LAYOUTS = (
    'send {"input_data": {"columns": [...], "data": [[...], ...]}} (split) '
    'or {"input_data": [{"age": 71, ...}, ...]} (records)'
)


class RequestError(ValueError):
    """A request the endpoint refuses; `status` is the HTTP code, the message says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class FeatureBatch:
    """Validated rows, one sequence of raw values per contract feature (all `n_rows` long).

    Column-major because both consumers want columns: the model encodes a column at a time,
    and data capture rebuilds rows only in its background writer.
    """

    columns: Mapping[str, Sequence[Any]]
    n_rows: int
    sent_records: Sequence[dict[str, Any]] | None = None
    """The caller's own row objects (records layout), reused as they are by data capture."""
    sent_split: tuple[Sequence[str], Sequence[Sequence[Any]]] | None = None
    """The caller's column names and row lists (split layout), for the same reason."""

    def rows(self) -> Iterator[dict[str, Any]]:
        """The raw feature rows, as the caller sent them (for data capture)."""
        if self.sent_records is not None:
            yield from self.sent_records
        elif self.sent_split is not None:
            names, data = self.sent_split
            for values in data:
                yield dict(zip(names, values, strict=True))
        else:
            names = list(self.columns)
            for values in zip(*(self.columns[name] for name in names), strict=True):
                yield dict(zip(names, values, strict=True))


def parse_scoring_request(body: bytes) -> FeatureBatch:
    """Decode and validate a scoring body, or raise RequestError naming the column and row."""
    document = _decode(body)
    if not isinstance(document, dict) or set(document) != {"input_data"}:
        keys = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise RequestError(
            422, f"the body must have exactly one key, input_data (got {keys}); " + _LAYOUTS
        )
    input_data = document["input_data"]
    if isinstance(input_data, dict):
        columns, n_rows = _split_columns(input_data)
        sent = {"sent_split": (input_data["columns"], input_data["data"])}
    elif isinstance(input_data, list):
        columns, n_rows = _record_columns(input_data)
        sent = {"sent_records": input_data}
    else:
        raise RequestError(422, f"input_data is a {type(input_data).__name__}; " + _LAYOUTS)
    return replace(validate_columns(columns, n_rows), **sent)


@dataclass(frozen=True)
class Violation:
    """One value that breaks the contract: where it is, what it is, and the rule it breaks."""

    row: int
    column: str
    value: str
    """The value as a person reads it: `400 (a number)`, `null (missing)`."""
    rule: str
    """What the column takes, the same words for every value that breaks it: `age must be a
    whole number from 18 to 100` (what batch scoring counts refusals by)."""

    @property
    def reason(self) -> str:
        return f"{self.value} is not valid; {self.rule}"


def validate_columns(columns: Mapping[str, Sequence[Any]], n_rows: int) -> FeatureBatch:
    """Check every feature's values against the contract; used for requests and smoke tests."""
    for name in FEATURES:
        first = next(_violations(name, columns[name]), None)
        if first is not None:
            raise RequestError(422, f"row {first.row}, column {name!r}: {first.reason}")
    return FeatureBatch({name: columns[name] for name in FEATURES}, n_rows)


def find_violations(columns: Mapping[str, Sequence[Any]]) -> list[Violation]:
    """Every value of every feature that breaks the contract, not just the first: batch scoring
    refuses the rows that hold them and scores the rest. The checks are validate_columns' own,
    so a clean column costs the same C-level pass and only a failing one is walked."""
    return [found for name in FEATURES for found in _violations(name, columns[name])]


class EncodedColumn(Sequence[Any]):
    """Text held as its distinct values (`words`) and, per row, the index of its word (`codes`):
    how Arrow dictionary-encodes a column. A file of a million rows holds a handful of payer
    codes, so the contract checks and the model encodes a word at a time, not a row at a time;
    read as a sequence it is the column's values, row by row."""

    def __init__(self, words: Sequence[Any], codes: np.ndarray) -> None:
        self.words = list(words)
        self.codes = np.asarray(codes, dtype=np.intp)

    def __len__(self) -> int:
        return len(self.codes)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self.words[code] for code in self.codes[index]]
        return self.words[self.codes[index]]

    def __iter__(self) -> Iterator[Any]:
        return map(self.words.__getitem__, self.codes.tolist())

    def filter(self, keep: np.ndarray) -> EncodedColumn:
        """The rows where `keep` (a boolean mask) is true."""
        return EncodedColumn(self.words, self.codes[keep])


def find_violations_in_columns(
    columns: Mapping[str, Sequence[Any] | np.ndarray | EncodedColumn],
) -> list[Violation]:
    """find_violations' answer for columns held the way a file reader holds them: numbers as
    numpy arrays (no nulls: those go as lists), text as EncodedColumn, anything else as a list.
    The rule's bounds are compared on the whole array (or on the few distinct words) to find
    the suspect values; find_violations' own per-value check then describes those, so a
    refusal carries the same words whichever entry point found it."""
    return [found for name in FEATURES for found in _column_violations(name, columns[name])]


def _column_violations(
    name: str, values: Sequence[Any] | np.ndarray | EncodedColumn
) -> Iterator[Violation]:
    if isinstance(values, EncodedColumn):
        bad_words = {found.row: found for found in _violations(name, values.words)}
        if not bad_words:
            return
        rows = np.flatnonzero(np.isin(values.codes, list(bad_words)))
        for row, code in zip(rows.tolist(), values.codes[rows].tolist(), strict=True):
            yield replace(bad_words[code], row=row)
        return
    spec = _NUMERIC.get(name)
    if spec is None or not isinstance(values, np.ndarray) or values.dtype.kind not in "iuf":
        yield from _violations(name, values)
        return
    ok = (values >= spec.minimum) & (values <= spec.maximum)  # NaN compares false
    if spec.integer and values.dtype.kind == "f":
        ok &= values == np.floor(values)
    suspects = np.flatnonzero(~ok)
    for found in _violations(name, values[suspects].tolist()):
        yield replace(found, row=int(suspects[found.row]))


def _violations(name: str, values: Sequence[Any]) -> Iterator[Violation]:
    if len(values) == 0:  # an empty batch breaks nothing (and min() of nothing raises)
        return iter(())
    if name in _NUMERIC:
        return _number_violations(name, values)
    return _category_violations(name, values)


def _decode(body: bytes) -> Any:
    """orjson for speed; on failure the stdlib parser tells NaN/Infinity (which Python clients
    send) apart from broken JSON, so the caller learns which column holds the NaN."""
    if not body:
        raise RequestError(400, "the request body is empty; " + _LAYOUTS)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        try:  # RecursionError: nested deeper than the interpreter's stack (~1,000 levels)
            return json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise RequestError(400, f"the body is not valid UTF-8 JSON: {fast_error}") from None


def _check_row_count(n_rows: int) -> None:
    if n_rows == 0:
        raise RequestError(422, "input_data has no rows; send at least one row")
    if n_rows > MAX_ROWS:
        raise RequestError(
            413,
            f"input_data has {n_rows:,} rows, more than {MAX_ROWS:,}; split the request "
            "or score the file with a batch job",
        )


def _check_names(names: Sequence[Any], where: str) -> None:
    """Name the missing and unknown columns, so a renamed field is obvious."""
    missing = [n for n in FEATURES if n not in names]
    unknown = sorted(str(n) for n in names if n not in _FEATURE_SET)
    problems = []
    if missing:
        problems.append(f"missing columns {missing}")
    if unknown:
        problems.append(f"unknown columns {unknown}")
    if problems:
        raise RequestError(
            422, f"{where}: {' and '.join(problems)}; the model takes exactly {list(FEATURES)}"
        )


def _split_columns(input_data: dict[str, Any]) -> tuple[dict[str, Sequence[Any]], int]:
    extra = sorted(set(input_data) - {"columns", "index", "data"})
    if extra or "columns" not in input_data or "data" not in input_data:
        raise RequestError(
            422,
            f"the split layout takes columns, data and an optional index (got "
            f"{sorted(input_data)}); " + _LAYOUTS,
        )
    names, data = input_data["columns"], input_data["data"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RequestError(422, "input_data.columns must be a list of column names")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise RequestError(422, f"input_data.columns names {twice} more than once")
    _check_names(names, "input_data.columns")
    if not isinstance(data, list):
        raise RequestError(422, "input_data.data must be a list of rows (lists of values)")
    _check_row_count(len(data))
    width = len(names)
    if not all(type(row) is list and len(row) == width for row in data):
        for index, row in enumerate(data):
            if type(row) is not list:
                raise RequestError(422, f"row {index} is a {type(row).__name__}, not a list")
            if len(row) != width:
                raise RequestError(
                    422, f"row {index} has {len(row)} values; expected {width}, one per column"
                )
    transposed = zip(*data, strict=True)
    return dict(zip(names, transposed, strict=True)), len(data)


def _record_columns(records: list[Any]) -> tuple[dict[str, Sequence[Any]], int]:
    _check_row_count(len(records))
    if not all(type(r) is dict and r.keys() == _FEATURE_SET for r in records):
        for index, record in enumerate(records):
            if type(record) is not dict:
                raise RequestError(
                    422, f"row {index} is a {type(record).__name__}, not an object of fields"
                )
            _check_names(list(record), f"row {index}")
    return {name: [r[name] for r in records] for name in FEATURES}, len(records)


def _describe(value: Any) -> str:
    if value is None:
        return "null (missing)"
    if isinstance(value, bool):
        return f"{value!r} (a boolean)"
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} (not a finite number)"
    if isinstance(value, int) and value.bit_length() > 64:  # repr of a huge int is itself huge
        return f"a {value.bit_length()}-bit integer"
    if isinstance(value, int | float):
        return f"{value!r} (a number)"
    return f"a {type(value).__name__}"


def _number_violations(name: str, values: Sequence[Any]) -> Iterator[Violation]:
    spec = _NUMERIC[name]
    types = set(map(type, values))
    floats = [v for v in values if type(v) is float] if float in types else []
    ok = (
        types <= _NUMBER_TYPES
        and not any(map(math.isnan, floats))
        and not any(map(math.isinf, floats))
        and spec.minimum <= min(values)
        and max(values) <= spec.maximum
        and (not spec.integer or all(map(float.is_integer, floats)))
    )
    if ok:
        return
    kind = "a whole number" if spec.integer else "a number"
    expected = f"{name} must be {kind} from {spec.minimum:g} to {spec.maximum:g}"
    for index, value in enumerate(values):
        bad = (
            type(value) not in _NUMBER_TYPES
            or (type(value) is float and not math.isfinite(value))
            or not spec.minimum <= value <= spec.maximum
            or (spec.integer and type(value) is float and not value.is_integer())
        )
        if bad:
            yield Violation(index, name, _describe(value), expected)


def _category_violations(name: str, values: Sequence[Any]) -> Iterator[Violation]:
    allowed = _CATEGORIES[name]
    try:
        if set(values) <= allowed:
            return
    except TypeError:  # an unhashable value (a list or an object): found below
        pass
    rule = f"{name} takes one of {_CATEGORY_LISTS[name]}"
    for index, value in enumerate(values):
        if type(value) is not str or value not in allowed:
            yield Violation(index, name, _describe(value), rule)
