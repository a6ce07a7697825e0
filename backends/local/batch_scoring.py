"""The local batch path: one input file scored by the batch scoring script in a process pool.

Azure ML batch deployments run `components/serving/src/batch_score.py` (`init()` once per
process, `run(mini_batch)` per mini-batch of files). Here the very same two functions run in a
pool of worker processes, no more than the machine's cores, each calling `init()` once with the
batch deployment's environment variables and the model's settings (`model_settings`, the rule
online deployments use, so labels follow the model's own threshold).

Memory stays bounded whatever the file's size: the input is read in blocks (CSV: 1 MiB blocks;
Parquet: a row group at a time, so a file written as one huge row group is the exception), cut
into mini-batches of `mini_batch_rows` rows written as Arrow IPC files to a spool folder, and at
most two mini-batches per worker are in flight. Each `run()` writes its scored and refused rows
(Arrow IPC here, Parquet on Azure), and this process appends them, in input order, to one
streaming Parquet writer each, so the outputs have Azure's layout: `<output>/scored/<input
stem>.parquet` and `<output>/rejects/<input stem>.parquet`.

Azure ML's `error_threshold` semantics, counted in rows: past `error_threshold` refused rows the
job stops and raises `BatchScoringFailed` with the counts (-1: never).
"""

from __future__ import annotations

import collections
import importlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import yaml

from backends.serving_package import SERVING_DIR, model_settings
from records.batch import BatchScoringFailed, BatchSummary
from records.workspace import ModelVersion

SCRIPT_DIR = SERVING_DIR / "src"
BATCH_DEPLOYMENT_FILE = SERVING_DIR / "batch-deployment.yml"
REPO_ROOT = SERVING_DIR.parents[1]
DEFAULT_MINI_BATCH_ROWS = 50_000
IN_FLIGHT_PER_WORKER = 2
"""Mini-batches handed to each worker ahead of the one being written: enough to keep every core
busy while this process cuts and writes, few enough that memory does not grow with the file."""
PART_FORMAT = "arrow"
"""The workers' outputs are Arrow IPC (the script's BATCH_OUTPUT_FORMAT): this process appends
them to its Parquet files, so Parquet-encoding them in the worker too would only cost a decode
here (about 1 s of CPU per million rows, measured by bench/batch.py)."""
_CSV_BLOCK_BYTES = 1 << 20
"""CSV bytes per block read. The streaming reader reads ahead a few dozen blocks whatever the
consumer does: about 40 MB at 1 MiB blocks, 300 MB at 8 MiB (measured on the generator's rows)."""


def scoring_script() -> ModuleType:
    """`batch_score`, imported from the serving code folder as Azure ML imports it (by file
    name, its neighbours and data_checks/ importable); the pool's workers, which start with
    this process's sys.path, import the same file."""
    for folder in (str(REPO_ROOT), str(SCRIPT_DIR)):
        if folder not in sys.path:
            sys.path.append(folder)
    return importlib.import_module("batch_score")


def deployment_variables() -> dict[str, str]:
    """The batch deployment YAML's environment variables (OMP_NUM_THREADS and the like)."""
    spec = yaml.safe_load(BATCH_DEPLOYMENT_FILE.read_text())
    return {str(k): str(v) for k, v in (spec.get("environment_variables") or {}).items()}


def core_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def score_file(
    input_path: Path | str,
    model: ModelVersion,
    model_dir: Path | str,
    output_dir: Path | str,
    *,
    run_id: str | None = None,
    mini_batch_rows: int = DEFAULT_MINI_BATCH_ROWS,
    workers: int | None = None,
    error_threshold: int = -1,
) -> BatchSummary:
    """Score every row of a CSV or Parquet file with `model` (its MLflow folder `model_dir`),
    writing `<output_dir>/scored/<stem>.parquet` and `<output_dir>/rejects/<stem>.parquet`.

    `workers` defaults to, and is capped at, the cores this process may use. Raises
    BatchScoringFailed when more than `error_threshold` rows are refused (-1: never) or a
    mini-batch fails; the scored output is then not written (no half file looks finished).
    """
    started = time.perf_counter()
    source, output = Path(input_path), Path(output_dir)
    if mini_batch_rows < 1:
        raise ValueError(f"mini_batch_rows must be 1 or more, got {mini_batch_rows}")
    if error_threshold < -1:
        raise ValueError(f"error_threshold must be -1 (ignore) or more, got {error_threshold}")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file to score")
    script = scoring_script()
    # a folder with no model fails here, with the reason, not as a pool of dead workers
    importlib.import_module("model_scoring").find_model_folder(Path(model_dir))
    workers = max(1, min(workers or core_count(), core_count()))
    run_id = run_id or uuid.uuid4().hex
    work = output / f".batch-{run_id}"
    environment = {
        **deployment_variables(),
        **model_settings(model),
        "AZUREML_MODEL_DIR": str(Path(model_dir).resolve()),
        "AZUREML_BI_OUTPUT_PATH": str(work / "parts"),
        "AZUREML_RUN_ID": run_id,
        script.OUTPUT_FORMAT_VARIABLE: PART_FORMAT,
    }
    job = _Job(script, source, output, work, run_id, error_threshold)
    try:
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),  # no fork of a threaded flow
            initializer=script.init,
            initargs=(environment,),
        ) as pool:
            try:
                pending: collections.deque[tuple[Path, Future[Any]]] = collections.deque()
                for spool in _mini_batches(script, source, work / "spool", mini_batch_rows):
                    pending.append((spool, pool.submit(script.run, [str(spool)])))
                    while len(pending) > IN_FLIGHT_PER_WORKER * workers:
                        job.take(*pending.popleft())
                while pending:
                    job.take(*pending.popleft())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        job.finish()
    except BaseException:
        job.abandon()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BatchSummary(
        input=str(source),
        scored=str(job.scored_path),
        rejects=str(job.rejects_path),
        rows=job.rows,
        rows_scored=job.rows_scored,
        rows_refused=job.rows_refused,
        refused_by_rule=dict(job.refused_by_rule),
        label_rate=job.positive / job.rows_scored if job.rows_scored else None,
        seconds=time.perf_counter() - started,
        model_name=environment["MODEL_NAME"],
        model_version=environment["MODEL_VERSION"],
        run_id=run_id,
        mini_batches=job.mini_batches,
        workers=workers,
    )


def _blocks(source: Path, script: ModuleType, rows: int) -> Iterator[pa.RecordBatch]:
    """The input file's rows, a block at a time (CSV as text: the script types the columns)."""
    suffix = source.suffix.lower()
    if suffix == ".csv":
        reader = pyarrow.csv.open_csv(
            source,
            read_options=pyarrow.csv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
            convert_options=script.csv_convert_options(source),
        )
        yield from reader
    elif suffix == ".parquet":
        yield from pq.ParquetFile(source).iter_batches(batch_size=rows)
    else:
        raise ValueError(f"{source.name}: the local batch path reads .csv or .parquet files")


def _mini_batches(script: ModuleType, source: Path, spool: Path, rows: int) -> Iterator[Path]:
    """Arrow IPC files of exactly `rows` rows (the last one fewer), each stamped with the input
    row number of its first row, named `<stem>-<sequence>.arrow`."""
    spool.mkdir(parents=True, exist_ok=True)
    held: list[pa.RecordBatch] = []
    held_rows = first_row = sequence = 0

    def cut(table: pa.Table) -> Path:
        nonlocal first_row, sequence
        metadata = {**(table.schema.metadata or {}), script.FIRST_ROW_KEY: str(first_row)}
        table = table.replace_schema_metadata(metadata)
        path = spool / f"{source.stem}-{sequence:06d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        first_row += table.num_rows
        sequence += 1
        return path

    for block in _blocks(source, script, rows):
        held.append(block)
        held_rows += block.num_rows
        while held_rows >= rows:
            table = pa.Table.from_batches(held)
            yield cut(table.slice(0, rows))
            rest = table.slice(rows)
            held, held_rows = rest.to_batches(), rest.num_rows
    if held_rows or sequence == 0:
        schema = held[0].schema if held else None
        yield cut(pa.Table.from_batches(held, schema=schema) if held else _empty(source, script))


def _empty(source: Path, script: ModuleType) -> pa.Table:
    """A file with a header and no rows still gets (empty) outputs."""
    if source.suffix.lower() == ".parquet":
        return pq.read_schema(source).empty_table()
    return pyarrow.csv.read_csv(source, convert_options=script.csv_convert_options(source))


@dataclass
class _Job:
    """The writing side: parts in input order into one Parquet file each, counts, threshold."""

    script: ModuleType
    source: Path
    output: Path
    work: Path
    run_id: str
    error_threshold: int
    rows: int = 0
    rows_scored: int = 0
    rows_refused: int = 0
    positive: int = 0
    mini_batches: int = 0
    refused_by_rule: collections.Counter[str] = field(default_factory=collections.Counter)
    _writers: dict[str, pq.ParquetWriter] = field(default_factory=dict)

    @property
    def scored_path(self) -> Path:
        return self.output / self.script.SCORED_DIR / f"{self.source.stem}.parquet"

    @property
    def rejects_path(self) -> Path:
        return self.output / self.script.REJECTS_DIR / f"{self.source.stem}.parquet"

    def take(self, spool: Path, done: Future[Any]) -> None:
        """Append one finished mini-batch's outputs; stop past the error threshold."""
        try:
            summary = done.result().to_dict("records")[0]
        except Exception as error:
            hint = (
                "; a worker process died: at start, init() could not load the model (its error "
                "is logged above); later, it ran out of memory or was killed"
                if isinstance(error, BrokenProcessPool)
                else ""
            )
            raise BatchScoringFailed(
                f"{self.source.name}: mini-batch {self.mini_batches} (rows from {self.rows:,}) "
                f"failed in its worker: {type(error).__name__}: {error}{hint}",
                self.rows,
                self.rows_refused,
                self.refused_by_rule,
            ) from error
        parts = self.work / "parts"
        for folder, final in (
            (self.script.SCORED_DIR, self.scored_path),
            (self.script.REJECTS_DIR, self.rejects_path),
        ):
            part = parts / folder / f"{spool.stem}.{PART_FORMAT}"
            with pa.memory_map(str(part)) as mapped:
                self._append(final, pa.ipc.open_file(mapped).read_all())
            part.unlink()
        spool.unlink()
        self.mini_batches += 1
        self.rows += summary["rows"]
        self.rows_scored += summary["scored"]
        self.rows_refused += summary["refused"]
        self.positive += summary["positive"]
        self.refused_by_rule.update(json.loads(summary["refusals"]))
        if 0 <= self.error_threshold < self.rows_refused:
            raise BatchScoringFailed(
                f"{self.source.name}: {self.rows_refused:,} of the first {self.rows:,} rows were "
                f"refused, more than the error threshold of {self.error_threshold:,}; by rule: "
                f"{dict(self.refused_by_rule.most_common())}. The refused rows and their reasons "
                f"are in {self.rejects_path}; fix the file or raise the threshold",
                self.rows,
                self.rows_refused,
                self.refused_by_rule,
            )

    def _append(self, final: Path, table: pa.Table) -> None:
        writer = self._writers.get(str(final))
        if writer is None:
            final.parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(self._partial(final), table.schema)
            self._writers[str(final)] = writer
        writer.write_table(table)

    def finish(self) -> None:
        """Close both files and give them their names (a reader never sees a half file)."""
        for name, writer in self._writers.items():
            writer.close()
            self._partial(Path(name)).replace(name)
        self._writers.clear()

    def abandon(self) -> None:
        """After a failure: keep the refused rows seen so far (they say what to fix), drop the
        scored rows (the job did not finish)."""
        for name, writer in self._writers.items():
            writer.close()
            if name == str(self.rejects_path):
                self._partial(Path(name)).replace(name)
            else:
                self._partial(Path(name)).unlink(missing_ok=True)
        self._writers.clear()

    def _partial(self, final: Path) -> Path:
        """Where a file grows until it is complete (one per job: two jobs never share one)."""
        return final.with_name(f".{final.name}.{self.run_id}.partial")
