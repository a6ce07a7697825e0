"""Run the readmission suite on a file or frame and turn the result into a report people can act on.

Great Expectations answers "which expectations failed"; the training gate and the humans reading
its output need "what is wrong with the data and what do I do about it". So this module never
raises for bad data: an unreadable file, a missing column or a string in a numeric column all
come back as a `DataValidationReport` with `passed=False` and a message naming the problem.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from data_checks.readmission_schema import ALL_COLUMNS, LABEL, NUMERIC_COLUMNS

if TYPE_CHECKING:
    from great_expectations.core import ExpectationValidationResult, ValidationDefinition
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

CONTRACT = "data_checks/readmission_schema.py"
_SAMPLE_SIZE = 5
# pandas decompresses these by extension, so their bytes are not expected to look like text.
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst", ".tar")
_NUMBER_COLUMNS = tuple(c.name for c in NUMERIC_COLUMNS) + (LABEL,)
_WHOLE_NUMBER_COLUMNS = tuple(c.name for c in NUMERIC_COLUMNS if c.integer) + (LABEL,)


@dataclass(frozen=True)
class ExpectationFailure:
    """One failed expectation, with enough detail to find the offending rows."""

    expectation: str
    column: str | None
    unexpected_count: int | None
    unexpected_percent: float | None
    sample_values: tuple[Any, ...]
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (sample values are already plain numbers and strings)."""
        return {
            "expectation": self.expectation,
            "column": self.column,
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": self.unexpected_percent,
            "sample_values": list(self.sample_values),
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpectationFailure:
        """Inverse of `to_dict`."""
        return cls(
            expectation=data["expectation"],
            column=data.get("column"),
            unexpected_count=data.get("unexpected_count"),
            unexpected_percent=data.get("unexpected_percent"),
            sample_values=tuple(data.get("sample_values", ())),
            detail=data.get("detail", ""),
        )

    def brief(self) -> str:
        """`age between 18 and 100 (12 rows, e.g. 130, 140)`: one clause of the summary."""
        if self.unexpected_count is not None:
            rows = f"{self.unexpected_count} row{'' if self.unexpected_count == 1 else 's'}"
            samples = ", ".join(_show(v) for v in self.sample_values)
            return f"{self.expectation} ({rows}{', e.g. ' + samples if samples else ''})"
        return f"{self.expectation} ({self.detail})"


@dataclass(frozen=True)
class DataValidationReport:
    """The data gate's verdict on one data set; the orchestrator reads this, not GX's result.

    `failures` lists each failed expectation once; checks that could not run only because
    their column is missing or not numeric are folded into that column's failure. `error` is
    set when the data could not be validated at all (unreadable file), and then
    `evaluated` is 0.
    """

    passed: bool
    data_path: str
    row_count: int
    evaluated: int
    failures: tuple[ExpectationFailure, ...]
    warnings: tuple[str, ...]
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, written as report.json by the validation component."""
        return {
            "passed": self.passed,
            "data_path": self.data_path,
            "row_count": self.row_count,
            "evaluated": self.evaluated,
            "failures": [f.to_dict() for f in self.failures],
            "warnings": list(self.warnings),
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataValidationReport:
        """Inverse of `to_dict`, for the orchestrator reading report.json."""
        return cls(
            passed=bool(data["passed"]),
            data_path=data["data_path"],
            row_count=int(data["row_count"]),
            evaluated=int(data["evaluated"]),
            failures=tuple(ExpectationFailure.from_dict(f) for f in data.get("failures", ())),
            warnings=tuple(data.get("warnings", ())),
            error=data.get("error"),
        )

    def summary(self) -> str:
        """One line for logs and exception messages."""
        if self.error is not None:
            return f"Data could not be validated: {self.error}"
        if self.failures:
            clauses = "; ".join(f.brief() for f in self.failures)
            text = f"{len(self.failures)} of {self.evaluated} expectations failed: {clauses}"
        else:
            text = (
                f"All {self.evaluated} expectations passed on {self.row_count:,} rows "
                f"of {self.data_path}"
            )
        if self.warnings:
            count = len(self.warnings)
            text += f" ({count} warning{'' if count == 1 else 's'}: {'; '.join(self.warnings)})"
        return text

    def to_markdown(self) -> str:
        """A readable report for the run's artifacts and the release review."""
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"# Data validation: {verdict}",
            "",
            f"- **Data:** `{self.data_path}`",
            f"- **Rows:** {self.row_count:,}",
        ]
        if self.error is not None:
            lines += ["", "## Could not validate", "", self.error]
        else:
            lines.append(
                f"- **Expectations:** {self.evaluated} evaluated, {len(self.failures)} failed"
            )
        if self.failures:
            lines += [
                "",
                "## Failed expectations",
                "",
                "| Expectation | Column | Unexpected rows | Sample values | Detail |",
                "| --- | --- | ---: | --- | --- |",
            ]
            for f in self.failures:
                count = "" if f.unexpected_count is None else f"{f.unexpected_count:,}"
                if f.unexpected_percent is not None:
                    count += f" ({f.unexpected_percent:.2f}%)"
                samples = ", ".join(_show(v) for v in f.sample_values)
                cells = (f.expectation, f.column or "", count, samples, f.detail)
                lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        if self.warnings:
            lines += ["", "## Warnings", ""] + [f"- {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"


def validate_file(
    path: str | Path, *, labelled: bool = True, mostly: float = 1.0
) -> tuple[DataValidationReport, dict[str, Any]]:
    """Read a CSV (or Parquet) file and validate it; an unreadable file is a failed report,
    not an exception. `labelled`/`mostly`: which suite (suite.build_readmission_suite).

    The dict is Great Expectations' full result as JSON (empty when the file could not be read).
    """
    data_path = str(path)
    frame, error = _read(Path(path))
    if error is not None or frame is None:
        return _unvalidated(data_path, error or "unknown read error", row_count=0), {}
    if not set(frame.columns) & set(ALL_COLUMNS):
        header = ", ".join(map(str, list(frame.columns)[:8]))
        error = (
            f"{data_path} does not look like readmission data: its header ({header}) has none of "
            f"the contract's columns ({', '.join(ALL_COLUMNS[:3])}, ...); pass a CSV with a "
            f"header row as described in {CONTRACT}"
        )
        return _unvalidated(data_path, error, row_count=len(frame)), {}
    return validate_dataframe(frame, data_path, labelled=labelled, mostly=mostly)


def validate_dataframe(
    df: pd.DataFrame, data_path: str = "<dataframe>", *, labelled: bool = True, mostly: float = 1.0
) -> tuple[DataValidationReport, dict[str, Any]]:
    """Validate rows already in memory; `data_path` only labels the report."""
    frame = _numbers_where_possible(df)
    try:
        result = _validation_definition(labelled, mostly).run(
            batch_parameters={"dataframe": frame}, result_format="SUMMARY"
        )
    except Exception as error:  # GX failing as a whole must still yield a report
        message = (
            f"Great Expectations could not run on {data_path}: {type(error).__name__}: {error}; "
            "this is a bug in the data gate or the data's shape, not a data-quality verdict"
        )
        return _unvalidated(data_path, message, row_count=len(df)), {}
    failures = _failures(list(result.results))
    report = DataValidationReport(
        passed=not failures,
        data_path=data_path,
        row_count=len(df),
        evaluated=int(result.statistics["evaluated_expectations"]),
        failures=failures,
        warnings=_warnings(frame),
        error=None,
    )
    return report, result.to_json_dict()


@functools.cache
def _validation_definition(labelled: bool, mostly: float) -> ValidationDefinition:
    """One ephemeral GX context per process and suite: building it costs more than a small
    validation."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from data_checks.suite import build_readmission_suite

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("readmissions")
        .add_dataframe_asset("rows")
        .add_batch_definition_whole_dataframe("whole_frame")
    )
    suite = context.suites.add(build_readmission_suite(labelled, mostly))
    return context.validation_definitions.add(
        gx.ValidationDefinition(name=f"readmission_{suite.name}", data=batch, suite=suite)
    )


def _read(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """Read the file as CSV (Parquet by its suffix), or say in plain words why it cannot be
    read and what to do."""
    if path.suffix.lower() == ".parquet" and path.is_file():
        try:
            return pd.read_parquet(path), None
        except Exception as error:  # a damaged or foreign file is a data problem to report
            return None, (
                f"{path} could not be read as Parquet ({type(error).__name__}: {error}); "
                "re-export it, or send a comma-separated file with a header row"
            )
    if not path.exists():
        return None, f"{path} does not exist; check the data path or the data asset version"
    if path.is_dir():
        return None, f"{path} is a folder, not a CSV file; pass the CSV file inside it"
    if path.stat().st_size == 0:
        return None, f"{path} is empty (0 bytes); regenerate or re-upload the data"
    if path.suffix.lower() not in _COMPRESSED_SUFFIXES:
        with path.open("rb") as handle:
            if b"\x00" in handle.read(8192):
                return None, (
                    f"{path} is a binary file (parquet, zip, ...?), not a CSV; "
                    "export the data as a comma-separated file with a header row"
                )
    try:
        return pd.read_csv(path, low_memory=False), None
    except pd.errors.EmptyDataError:
        return None, f"{path} has no header row or data; regenerate or re-upload the data"
    except UnicodeDecodeError:
        reason = "is not UTF-8 text (saved in another encoding, or not text at all)"
    except pd.errors.ParserError as error:
        reason = f"is not a well-formed CSV ({str(error).strip()})"
    except Exception as error:  # any other reader failure is still a data problem to report
        reason = f"could not be read as CSV ({type(error).__name__}: {error})"
    return None, f"{path} {reason}; export the data as a comma-separated file with a header row"


def _numbers_where_possible(df: pd.DataFrame) -> pd.DataFrame:
    """Keep a numeric column that holds stray text as object values: numbers plus the strings.

    GX then checks such a column value by value, so the type check names the bad values
    instead of just reporting the column's dtype.
    """
    converted: dict[str, pd.Series] = {}
    for name in _NUMBER_COLUMNS:
        if name not in df.columns or not isinstance(df[name], pd.Series):
            continue
        column = df[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            continue
        numbers = pd.to_numeric(column, errors="coerce")
        mixed = column.astype(object)
        parsed = numbers.notna()
        mixed[parsed] = numbers[parsed].astype(object)
        converted[name] = mixed
    return df.assign(**converted) if converted else df


def _failures(results: list[ExpectationValidationResult]) -> tuple[ExpectationFailure, ...]:
    """Turn failed GX results into report entries, folding checks a broken column blocked."""
    failed = [r for r in results if not r.success]
    missing = {_column(r) for r in failed if _kind(r) == "expect_column_to_exist"}
    not_numeric = {
        _column(r)
        for r in failed
        if _kind(r) == "expect_column_values_to_be_in_type_list" and _column(r) not in missing
    }
    blocked: Counter[str | None] = Counter()
    kept = []
    for result in failed:
        column = _column(result)
        if _exception_message(result) and (column in missing or column in not_numeric):
            blocked[column] += 1
        else:
            kept.append(result)
    return tuple(_failure(r, blocked[_column(r)]) for r in kept)


def _failure(result: ExpectationValidationResult, blocked: int) -> ExpectationFailure:
    """Describe one failed expectation; `blocked` counts its column's checks that could not run."""
    config = _config(result)
    kwargs = config.kwargs
    column = kwargs.get("column")
    kind = config.type
    stats: dict[str, Any] = dict(result.result or {})
    count = stats.get("unexpected_count")
    percent = stats.get("unexpected_percent")
    samples = _samples(stats)
    blocked_note = f"; {blocked} other check(s) on it could not run" if blocked else ""
    exception = _exception_message(result)
    observed = stats.get("observed_value")

    if kind == "expect_column_to_exist":
        detail = f"column is missing; add it as defined in {CONTRACT}{blocked_note}"
    elif exception:
        detail = f"could not be evaluated: {exception}"
    elif kind == "expect_column_values_to_not_be_null":
        detail = f"{count} empty value(s); fill or drop those rows at the source"
        samples = ()
    elif kind == "expect_column_values_to_be_in_type_list":
        if count is None:
            detail = f"column type is {observed}, expected numbers{blocked_note}"
        else:
            detail = f"{count} non-numeric value(s); fix or drop those rows{blocked_note}"
    elif kind == "expect_column_values_to_be_between":
        bounds = f"[{kwargs.get('min_value'):g}, {kwargs.get('max_value'):g}]"
        detail = f"{count} value(s) outside {bounds}; fix the source or the contract"
    elif kind == "expect_column_values_to_be_in_set":
        allowed = ", ".join(_show(v) for v in kwargs.get("value_set", ()))
        detail = f"{count} value(s) not in {{{allowed}}}; map them to a known value at the source"
    elif kind == "expect_table_row_count_to_be_between":
        detail = f"found {observed} rows, need at least {kwargs.get('min_value')}; supply more data"
    elif kind == "expect_column_mean_to_be_between":
        expected = f"expected {kwargs.get('min_value'):.0%} to {kwargs.get('max_value'):.0%}"
        if isinstance(observed, (int, float)):
            detail = f"mean is {observed:.1%}, {expected}; check how the label was defined"
        else:
            detail = f"no values to compute a mean from, {expected}"
    else:
        detail = f"observed {observed}" if observed is not None else "failed"
    return ExpectationFailure(
        expectation=config.description or kind,
        column=column,
        unexpected_count=None if count is None else int(count),
        unexpected_percent=None if percent is None else round(float(percent), 4),
        sample_values=samples if count is not None else (),
        detail=detail,
    )


def _warnings(frame: pd.DataFrame) -> tuple[str, ...]:
    """Problems that should not stop training but someone should know about."""
    warnings = []
    extra = [str(c) for c in frame.columns if c not in ALL_COLUMNS]
    if extra:
        warnings.append(
            f"unknown column(s) {', '.join(extra)} are not in the data contract and will be "
            f"ignored; add them to {CONTRACT} if training should use them"
        )
    for name in _WHOLE_NUMBER_COLUMNS:
        if name not in frame.columns or not pd.api.types.is_float_dtype(frame[name]):
            continue
        values = frame[name].dropna()
        fractional = values[values % 1 != 0]
        if len(fractional):
            examples = ", ".join(_show(v) for v in fractional.unique()[:_SAMPLE_SIZE])
            warnings.append(
                f"{name} has {len(fractional)} non-whole value(s) (e.g. {examples}) but the "
                "contract says whole numbers; they will be used as they are"
            )
    return tuple(warnings)


def _unvalidated(data_path: str, error: str, row_count: int) -> DataValidationReport:
    """The report for data that could not be validated at all."""
    return DataValidationReport(
        passed=False,
        data_path=data_path,
        row_count=row_count,
        evaluated=0,
        failures=(),
        warnings=(),
        error=error,
    )


def _config(result: ExpectationValidationResult) -> ExpectationConfiguration:
    """The expectation a result answers. GX types it optional (a result may be built without
    one), but a validation run attaches it to every result it returns."""
    config = result.expectation_config
    if config is None:
        raise TypeError(f"GX returned a validation result without its expectation: {result}")
    return config


def _kind(result: ExpectationValidationResult) -> str:
    return _config(result).type


def _column(result: ExpectationValidationResult) -> str | None:
    return _config(result).kwargs.get("column")


def _exception_message(result: ExpectationValidationResult) -> str | None:
    """GX stores exceptions flat or keyed by metric; return the first message either way."""
    info = result.exception_info or {}
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("raised_exception"):
            return str(entry.get("exception_message") or "unknown error")
    return None


def _samples(stats: Mapping[str, Any]) -> tuple[Any, ...]:
    """A few distinct offending values, most frequent first."""
    counts = stats.get("partial_unexpected_counts") or []
    values = [c["value"] for c in counts] or list(stats.get("partial_unexpected_list") or [])
    distinct = list(dict.fromkeys(_json_safe(v) for v in values))
    return tuple(distinct[:_SAMPLE_SIZE])


def _json_safe(value: Any) -> Any:
    """Plain Python scalars for report.json; GX's JSON results are mostly so already."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):  # NaN is not valid JSON
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
