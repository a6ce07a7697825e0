"""Batch scoring: the online scoring script's contract and model, in Azure ML's batch form.

An Azure ML batch deployment (`components/serving/batch-deployment.yml`) calls `init()` once in
each worker process and `run(mini_batch)` with a list of file paths; the local backend
(`backends/local/batch_scoring.py`) calls the same two functions in a process pool, on
mini-batches it cut from one input file. Either way a file is read (CSV, Parquet, or the Arrow
IPC the local backend cuts), checked against the data contract by `request_contract` (the rules
the online endpoint refuses a request by), scored by `model_scoring.load_scorer` (the online
model, fast path and all) and labelled `probability >= MODEL_THRESHOLD` as `score.py` does.

Batch differs from online in one way: a bad row refuses only itself. Each refused row goes to the
rejects output with every rule it breaks, and the rest of the file is scored.

Outputs (the deployment's `summary_only` action: this script writes them, as Azure ML's custom
output example does), under AZUREML_BI_OUTPUT_PATH, one pair per input file:

- `scored/<file stem>.parquet`: the file's columns (contract features in the contract's types)
  plus probability, label, model_name, model_version, run_id;
- `rejects/<file stem>.parquet`: the refused rows as read, plus row (its 0-based position in the
  input file), reasons (every broken rule, with the value) and rules (the rules alone).

`run()` returns one summary row per file it finished (rows, scored, refused, labels of 1,
refusals per rule as JSON): Azure ML counts a returned row as one file done, so its
`error_threshold` counts files that could not be scored, never refused rows.

Settings (environment variables): AZUREML_MODEL_DIR, AZUREML_BI_OUTPUT_PATH, AZUREML_RUN_ID
(Azure ML's own); MODEL_NAME, MODEL_VERSION, MODEL_THRESHOLD (the deployment's, as online).
"""

from __future__ import annotations

import collections
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.parquet as pq
from model_scoring import Scorer, decision_threshold, load_scorer, predicted_labels
from request_contract import EncodedColumn, FeatureBatch, Violation, find_violations_in_columns

from data_checks.readmission_schema import CATEGORICAL_COLUMNS, FEATURES, NUMERIC_COLUMNS

log = logging.getLogger("batch_score")

FIRST_ROW_KEY = b"batch_score.first_row"
"""Schema metadata of a mini-batch file cut from a larger file: where its first row sits in the
input, so rejects name the input's row, not the mini-batch's."""
SCORED_DIR = "scored"
REJECTS_DIR = "rejects"
OUTPUT_COLUMNS = ("probability", "label", "model_name", "model_version", "run_id")
REJECT_COLUMNS = ("row", "reasons", "rules")
SUMMARY_COLUMNS = ("file", "rows", "scored", "refused", "positive", "refusals")
OUTPUT_FORMAT_VARIABLE = "BATCH_OUTPUT_FORMAT"
"""parquet (Azure ML's outputs, the default) or arrow: Arrow IPC parts, for a caller that
appends them to files of its own (the local backend) and would otherwise decode Parquet only to
encode it again."""
OUTPUT_FORMATS = ("parquet", "arrow")
_NUMERIC = {c.name: c for c in NUMERIC_COLUMNS}
_CATEGORICAL = frozenset(c.name for c in CATEGORICAL_COLUMNS)


class Loaded(NamedTuple):
    """What init() loaded: the scorer, the label rule's threshold, who scores, where to write."""

    scorer: Scorer
    threshold: float
    model_name: str
    model_version: str
    run_id: str
    output: Path
    output_format: str


_loaded: Loaded | None = None


def init(environment: Mapping[str, str] | None = None) -> None:
    """Load and smoke-test the model once per worker process (Azure ML calls this with nothing;
    the local process pool passes the deployment's variables, which its workers were not
    started with)."""
    global _loaded
    if environment:
        os.environ.update(environment)
    model_dir = Path(os.environ["AZUREML_MODEL_DIR"])
    threshold = decision_threshold(os.environ)
    output = Path(os.environ["AZUREML_BI_OUTPUT_PATH"])
    output_format = os.environ.get(OUTPUT_FORMAT_VARIABLE, "parquet")
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"{OUTPUT_FORMAT_VARIABLE}={output_format}: use one of {OUTPUT_FORMATS}")
    for folder in (SCORED_DIR, REJECTS_DIR):
        (output / folder).mkdir(parents=True, exist_ok=True)
    scorer = load_scorer(model_dir, bulk=True)
    _loaded = Loaded(
        scorer=scorer,
        threshold=threshold,
        model_name=os.environ.get("MODEL_NAME", model_dir.parent.name),
        model_version=os.environ.get("MODEL_VERSION", model_dir.name),
        run_id=os.environ.get("AZUREML_RUN_ID", ""),
        output=output,
        output_format=output_format,
    )
    log.info(
        "batch scoring %s v%s with the %s scorer (threshold %.4f), writing to %s",
        _loaded.model_name,
        _loaded.model_version,
        scorer.kind,
        threshold,
        output,
    )


def run(mini_batch: Sequence[str]) -> pd.DataFrame:
    """Score each file of the mini-batch; one summary row per file (see the module docstring).

    A file that cannot be read raises: Azure ML retries the mini-batch, then counts its files
    as failed against the deployment's error_threshold.
    """
    loaded = _loaded
    if loaded is None:
        raise RuntimeError("run() before init(): the model is not loaded")
    summaries = []
    for name in mini_batch:
        path = Path(name)
        table, first_row = read_rows(path)
        scored, rejected, refusals = score_rows(table, first_row, loaded)
        write_part(scored, loaded.output / SCORED_DIR / path.stem, loaded.output_format)
        write_part(rejected, loaded.output / REJECTS_DIR / path.stem, loaded.output_format)
        positive = int(pc.sum(scored["label"]).as_py() or 0)
        summaries.append(
            (path.name, table.num_rows, scored.num_rows, rejected.num_rows, positive, refusals)
        )
    frame = pd.DataFrame(summaries, columns=list(SUMMARY_COLUMNS))
    frame["refusals"] = frame["refusals"].map(json.dumps)  # Azure ML writes plain values only
    return frame


def write_part(table: pa.Table, stem: Path, output_format: str) -> Path:
    """One output file, `<stem>.parquet` or `<stem>.arrow`."""
    path = stem.with_name(f"{stem.name}.{output_format}")
    if output_format == "arrow":
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        pq.write_table(table, path)
    return path


# --- reading -----------------------------------------------------------------------------------


def csv_convert_options(path: Path) -> pyarrow.csv.ConvertOptions:
    """Every column as text: numbers are parsed per column by the contract step, so one bad
    value refuses one row instead of failing the file's type inference (or, read in blocks,
    a later block)."""
    names = pyarrow.csv.open_csv(path).schema.names
    return pyarrow.csv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True
    )


def read_rows(path: Path) -> tuple[pa.Table, int]:
    """(the file's rows, the input row number of its first row)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = pyarrow.csv.read_csv(path, convert_options=csv_convert_options(path))
    elif suffix == ".parquet":
        table = pq.read_table(path)
    elif suffix in (".arrow", ".feather", ".ipc"):
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
    else:
        raise ValueError(f"{path.name}: batch scoring reads .csv, .parquet or .arrow files")
    first_row = int((table.schema.metadata or {}).get(FIRST_ROW_KEY, 0))
    return table, first_row


# --- the contract, row by row ------------------------------------------------------------------


class Feature(NamedTuple):
    """One contract column of a file: its values as the contract checks them, and the column in
    the contract's Arrow type when every value converted (else None). The values are a numpy
    array (numbers without nulls), an EncodedColumn (text), or Python objects (anything else:
    nulls, mixed text), the three forms `find_violations_in_columns` and the scorer take."""

    values: np.ndarray | EncodedColumn | list[Any]
    typed: pa.ChunkedArray | None


def contract_feature(name: str, column: pa.ChunkedArray) -> Feature:
    """The column in the forms above, built column-wise (C loops, not per value, unless a text
    column holds something that is not a number, or a number is missing)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if name in _CATEGORICAL:
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            return Feature(column.to_pylist(), None)
        return Feature(_encoded(column), column.cast(pa.string()))
    wanted = pa.int64() if _NUMERIC[name].integer else pa.float64()
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        for target in (wanted, pa.float64()):  # "71.0" in a whole-number column: a float
            try:
                column = column.cast(target)
                break
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
        else:
            return Feature([_number_or_text(v) for v in column.to_pylist()], None)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return Feature(column.to_pylist(), None)  # booleans, dates: the contract names them
    if column.null_count:
        return Feature(column.to_pylist(), column)
    numbers = column.to_numpy()
    if numbers.dtype == np.uint64:  # past int64's range: the values as Python holds them
        return Feature(numbers.tolist(), column)
    if numbers.dtype.itemsize < 8 or numbers.dtype.kind == "u":
        numbers = numbers.astype(np.float64 if numbers.dtype.kind == "f" else np.int64)
    return Feature(numbers, column)


def _encoded(column: pa.ChunkedArray) -> EncodedColumn:
    """A text column as its few distinct values (None for null) and a code per row."""
    if len(column) == 0:
        return EncodedColumn([], np.empty(0, dtype=np.intp))
    encoded = pc.dictionary_encode(column, null_encoding="encode").combine_chunks()
    return EncodedColumn(
        encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False)
    )


def _number_or_text(text: str | None) -> Any:
    """A CSV field as the number it spells, else as it is (the contract then refuses it)."""
    if text is None:
        return None
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            continue
    return text


class Refusal(NamedTuple):
    """Why one row was refused: the reason (with the value) and the rule alone (counted)."""

    reason: str
    rule: str


def refusals_by_row(violations: Sequence[Violation]) -> dict[int, list[Refusal]]:
    by_row: dict[int, list[Refusal]] = collections.defaultdict(list)
    for found in violations:
        by_row[found.row].append(Refusal(f"column {found.column!r}: {found.reason}", found.rule))
    return by_row


def score_rows(
    table: pa.Table, first_row: int, loaded: Loaded
) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """(scored rows, refused rows, refused rows per rule) of one file's rows."""
    n_rows = table.num_rows
    missing = [name for name in FEATURES if name not in table.column_names]
    if missing:  # no row of this file can be scored: every row refused, for that reason
        rule = f"the file has no column {', '.join(missing)}; the model takes {list(FEATURES)}"
        by_row = dict.fromkeys(range(n_rows), [Refusal(rule, rule)])
        return _scored(table.slice(0, 0), {}, np.empty(0), loaded), *_refused(
            table, by_row, first_row
        )
    features = {name: contract_feature(name, table[name]) for name in FEATURES}
    by_row = refusals_by_row(find_violations_in_columns({n: f.values for n, f in features.items()}))
    if by_row:
        keep = np.ones(n_rows, dtype=bool)
        keep[list(by_row)] = False
        mask = pa.array(keep)
        kept_table = table.filter(mask)
        kept = {
            name: Feature(_kept(f.values, keep), None if f.typed is None else f.typed.filter(mask))
            for name, f in features.items()
        }
    else:
        kept_table, kept = table, features
    n_kept = n_rows - len(by_row)
    batch = FeatureBatch({name: f.values for name, f in kept.items()}, n_kept)
    probabilities = loaded.scorer.probabilities(batch) if n_kept else np.empty(0)
    return _scored(kept_table, kept, probabilities, loaded), *_refused(table, by_row, first_row)


def _kept(
    values: np.ndarray | EncodedColumn | list[Any], keep: np.ndarray
) -> np.ndarray | EncodedColumn | list[Any]:
    if isinstance(values, np.ndarray):
        return values[keep]
    if isinstance(values, EncodedColumn):
        return values.filter(keep)
    return [value for value, wanted in zip(values, keep.tolist(), strict=True) if wanted]


def _contract_type(name: str) -> pa.DataType:
    if name in _CATEGORICAL:
        return pa.string()
    return pa.int64() if _NUMERIC[name].integer else pa.float64()


def _scored(
    table: pa.Table, kept: Mapping[str, Feature], probabilities: np.ndarray, loaded: Loaded
) -> pa.Table:
    """The scored rows: the input's columns in its order (contract features in the contract's
    types: every kept value passed the contract, so the casts are exact), then the outputs."""
    columns: dict[str, pa.ChunkedArray | pa.Array] = {}
    for name in table.column_names:
        if name not in kept:
            columns[name] = table[name]
            continue
        wanted = _contract_type(name)
        typed = kept[name].typed
        if typed is None:  # mixed text, every kept value a valid number: via float64
            source = pa.float64() if wanted != pa.string() else pa.string()
            typed = pa.chunked_array([pa.array(list(kept[name].values), type=source)])
        columns[name] = typed.cast(wanted)
    n_rows = len(probabilities)
    labels = predicted_labels(probabilities, loaded.threshold)
    columns["probability"] = pa.array(probabilities, type=pa.float64())
    columns["label"] = pa.array(labels, type=pa.int8())
    for name, value in zip(
        OUTPUT_COLUMNS[2:], (loaded.model_name, loaded.model_version, loaded.run_id), strict=True
    ):
        columns[name] = pa.repeat(pa.scalar(value, pa.string()), n_rows)
    return pa.table(columns)


def _refused(
    table: pa.Table, by_row: Mapping[int, list[Refusal]], first_row: int
) -> tuple[pa.Table, dict[str, int]]:
    """The refused rows as read, with their reasons, and how many rows broke each rule."""
    rows = sorted(by_row)
    # the file's own schema metadata (pandas', a mini-batch's first row) would mislead here
    refused = table.take(pa.array(rows, type=pa.int64())).replace_schema_metadata(None)
    reasons, rules = [], []
    per_rule: collections.Counter[str] = collections.Counter()
    for row in rows:
        found = by_row[row]
        reasons.append("; ".join(refusal.reason for refusal in found))
        broken = list(dict.fromkeys(refusal.rule for refusal in found))
        rules.append("; ".join(broken))
        per_rule.update(broken)
    refused = refused.append_column("row", pa.array([first_row + r for r in rows], pa.int64()))
    refused = refused.append_column("reasons", pa.array(reasons, pa.string()))
    refused = refused.append_column("rules", pa.array(rules, pa.string()))
    return refused, dict(per_rule)
