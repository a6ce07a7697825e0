"""Batch scoring benchmark: the local batch path against one process calling the pyfunc model.

The issue's claim: scoring a file end to end (read, validate, score, write) through the local
batch path (`backends/local/batch_scoring.py`: the batch scoring script Azure ML runs, in a
process pool bounded by the cores, the file read and written in mini-batches) gives at least 3x
the rows per second of the obvious peer, one process calling
`mlflow.pyfunc.load_model(model).predict` on the whole file and writing Parquet, on 2 cores; and
its peak memory stays flat as the file grows (1,000,000 and 5,000,000 rows).

Each contestant runs in a process of its own, started fresh, one after the other on the same
file and model; this process samples the resident memory of its whole process tree (workers
included) every 50 ms and takes the CPU it used from the operating system when it exits. The
time is measured inside the contestant, from the call that loads the model to the last byte
written (imports excluded on both sides); both answers are compared row by row.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "batch.json"
LABEL = "readmitted_30d"
OURS = "local batch path"
PEER = "pyfunc predict (one process)"
MIN_SPEEDUP = 3.0
MAX_MEMORY_GROWTH = 1.25
"""Ours' peak memory on the big file over the small one: "flat" allows sampling noise."""
MAX_PROBABILITY_DIFFERENCE = 1e-6
GENERATE_CHUNK_ROWS = 200_000
SAMPLE_SECONDS = 0.05


@dataclass(frozen=True)
class ContestantRun:
    """One contestant on one file."""

    name: str
    rows: int
    seconds: float
    """Model load to outputs written, measured inside the contestant (imports excluded)."""
    rows_per_second: float
    process_seconds: float
    """The contestant's whole process, start (imports) to exit."""
    cpu_seconds: float
    """User + system CPU of the process and every worker it started."""
    peak_memory_mb: float
    """Largest sum of resident memory over the process tree (shared library pages counted
    once per process, as RSS does)."""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchBenchmark:
    """Every figure the run prints, as written to bench/results/batch.json."""

    rows: int
    big_rows: int
    input_format: str
    train_rows: int
    mini_batch_rows: int
    peer: ContestantRun
    ours: ContestantRun
    ours_big: ContestantRun
    peer_big: ContestantRun | None
    speedup: float
    """Ours' rows/s over the peer's on `rows`."""
    memory_ratio: float
    """Ours' peak memory over the peer's on `rows`."""
    memory_growth: float
    """Ours' peak memory on `big_rows` over on `rows`."""
    max_probability_difference: float
    cpu_count: int
    load_average_at_start: float
    failures: tuple[str, ...]


# --- the contestants (each runs in a fresh process: `python -c`, see run_contestant) ----------


def contestant(argv: Sequence[str]) -> int:
    """Entry point of a contestant process; prints one JSON line (seconds and details)."""
    options = json.loads(argv[0])
    source, model_dir, output = (Path(options[k]) for k in ("input", "model_dir", "output"))
    if options["name"] == OURS:
        seconds, detail = _ours(source, model_dir, output, options)
    else:
        seconds, detail = _peer(source, model_dir, output)
    print(json.dumps({"seconds": seconds, "detail": detail}))
    return 0


def _ours(
    source: Path, model_dir: Path, output: Path, options: dict[str, Any]
) -> tuple[float, dict[str, Any]]:
    from backends.local.batch_scoring import score_file
    from records.workspace import ModelVersion

    model = ModelVersion(name="readmission", version="1", source="bench", run_id=None)
    started = time.perf_counter()
    summary = score_file(
        source,
        model,
        model_dir,
        output,
        mini_batch_rows=options["mini_batch_rows"],
        workers=options["workers"],
    )
    seconds = time.perf_counter() - started
    return seconds, {
        "output": summary.scored,
        "rows_scored": summary.rows_scored,
        "rows_refused": summary.rows_refused,
        "workers": summary.workers,
        "mini_batches": summary.mini_batches,
        "label_rate": summary.label_rate,
    }


def _peer(source: Path, model_dir: Path, output: Path) -> tuple[float, dict[str, Any]]:
    """What a team writes first: load the pyfunc model, predict on the whole file, write it."""
    import mlflow.pyfunc
    import numpy as np
    import pandas as pd

    from backends.serving_package import DEFAULT_THRESHOLD

    started = time.perf_counter()
    model = mlflow.pyfunc.load_model(str(_mlflow_folder(model_dir)))
    frame = pd.read_csv(source) if source.suffix == ".csv" else pd.read_parquet(source)
    probabilities = np.asarray(model.predict(frame))[:, 1]
    frame["probability"] = probabilities
    frame["label"] = (probabilities >= DEFAULT_THRESHOLD).astype(np.int8)
    output.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(output / "scored.parquet", index=False)
    seconds = time.perf_counter() - started
    return seconds, {"output": str(output / "scored.parquet"), "rows_scored": len(frame)}


def _mlflow_folder(model_dir: Path) -> Path:
    return next(model_dir.rglob("MLmodel")).parent


# --- the harness ---------------------------------------------------------------------------------


def write_input(path: Path, rows: int) -> float:
    """Synthetic patients without the label, generated and written in chunks (this process'
    memory does not grow with the file); returns the seconds it took."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet as pq

    from synthetic_data.readmissions import generate_readmissions

    started = time.perf_counter()
    writer: Any = None
    for index, first in enumerate(range(0, rows, GENERATE_CHUNK_ROWS)):
        count = min(GENERATE_CHUNK_ROWS, rows - first)
        frame = generate_readmissions(count, seed=1_000 + index).drop(columns=[LABEL])
        table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
        if writer is None:
            writer = (
                pyarrow.csv.CSVWriter(path, table.schema)
                if path.suffix == ".csv"
                else pq.ParquetWriter(path, table.schema)
            )
        writer.write_table(table)
    writer.close()
    return time.perf_counter() - started


def run_contestant(
    name: str, source: Path, model_dir: Path, output: Path, rows: int, options: dict[str, Any]
) -> ContestantRun:
    """One contestant in a fresh process, its process tree's memory sampled while it runs."""
    import psutil

    arguments = json.dumps(
        {"name": name, "input": str(source), "model_dir": str(model_dir), "output": str(output)}
        | options
    )
    code = "import sys; from bench.batch import contestant; sys.exit(contestant(sys.argv[1:]))"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", code, arguments],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    root, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        resident = 0
        for member in tree:
            with contextlib.suppress(psutil.NoSuchProcess):  # a worker that just exited
                resident += member.memory_info().rss
        peak = max(peak, resident)
        time.sleep(SAMPLE_SECONDS)
    stdout, stderr = process.communicate()
    process_seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise RuntimeError(f"{name} on {source.name} failed ({process.returncode}):\n{stderr}")
    answer = json.loads(stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return ContestantRun(
        name=name,
        rows=rows,
        seconds=answer["seconds"],
        rows_per_second=rows / answer["seconds"],
        process_seconds=process_seconds,
        cpu_seconds=cpu,
        peak_memory_mb=peak / 1e6,
        detail=answer["detail"],
    )


def largest_difference(ours: ContestantRun, peer: ContestantRun) -> float:
    """Row by row: both keep the input's order."""
    import numpy as np
    import pyarrow.parquet as pq

    mine = pq.read_table(ours.detail["output"], columns=["probability"])["probability"]
    theirs = pq.read_table(peer.detail["output"], columns=["probability"])["probability"]
    if len(mine) != len(theirs):
        return float("inf")
    return float(np.max(np.abs(mine.to_numpy() - theirs.to_numpy()), initial=0.0))


def describe(run: ContestantRun) -> str:
    return (
        f"{run.rows:,} rows in {run.seconds:.2f} s = {run.rows_per_second:,.0f} rows/s, "
        f"peak {run.peak_memory_mb:,.0f} MB, CPU {run.cpu_seconds:.1f} s "
        f"(process {run.process_seconds:.1f} s with imports)"
    )


def goal_failures(
    speedup: float, growth: float, difference: float, ours: Sequence[ContestantRun]
) -> tuple[str, ...]:
    failures = []
    if speedup < MIN_SPEEDUP:
        failures.append(
            f"speed: {speedup:.2f}x the rows/s of {PEER}, goal {MIN_SPEEDUP:.0f}x on 2 cores"
        )
    if growth > MAX_MEMORY_GROWTH:
        failures.append(
            f"memory: peak grew {growth:.2f}x with the file, goal at most {MAX_MEMORY_GROWTH}x"
        )
    if difference > MAX_PROBABILITY_DIFFERENCE:
        failures.append(f"answers: probabilities differ by up to {difference:.2e} from the peer's")
    for run in ours:
        if run.detail["rows_scored"] != run.rows:
            failures.append(f"ours scored {run.detail['rows_scored']:,} of {run.rows:,} rows")
    return tuple(failures)


def run(
    rows: int,
    big_rows: int,
    input_format: str,
    train_rows: int,
    mini_batch_rows: int,
    workers: int | None,
    peer_big: bool,
    workdir: Path,
) -> BatchBenchmark:
    """Measure everything once, printing each figure as it lands."""
    from backends.local.batch_scoring import core_count
    from bench.serve import save_model

    cores, load = core_count(), os.getloadavg()[0]
    print(f"model {train_rows:,} training rows; {cores} cores, load {load:.1f}")
    if load > 0.5 * cores:
        print("      other processes are using the CPUs: timings will be noisy")
    model_dir = save_model(workdir / "model", train_rows)
    files = {}
    for count in dict.fromkeys((rows, big_rows)):
        files[count] = workdir / f"discharges-{count}.{input_format}"
        seconds = write_input(files[count], count)
        size = files[count].stat().st_size / 1e6
        print(
            f"data  {count:,} rows generated and written as {input_format} in {seconds:.1f} s "
            f"({size:,.0f} MB)"
        )
    options = {"mini_batch_rows": mini_batch_rows, "workers": workers}

    def contest(name: str, count: int) -> ContestantRun:
        output = workdir / f"out-{name.split()[0]}-{count}"
        result = run_contestant(name, files[count], model_dir, output, count, options)
        print(f"{'ours' if name == OURS else 'peer'}  {name}: {describe(result)}")
        return result

    peer = contest(PEER, rows)
    ours = contest(OURS, rows)
    print(
        f"      {ours.detail['workers']} workers, {ours.detail['mini_batches']} mini-batches "
        f"of {mini_batch_rows:,} rows"
    )
    speedup = ours.rows_per_second / peer.rows_per_second
    memory_ratio = ours.peak_memory_mb / peer.peak_memory_mb
    difference = largest_difference(ours, peer)
    print(
        f"speed {speedup:.2f}x the peer's rows/s (goal >= {MIN_SPEEDUP:.0f}x); "
        f"CPU {ours.cpu_seconds / peer.cpu_seconds:.2f}x the peer's"
    )
    print(f"memory {memory_ratio:.2f}x the peer's peak at {rows:,} rows")
    print(f"answers differ by at most {difference:.2e} (goal <= {MAX_PROBABILITY_DIFFERENCE:g})")
    ours_big = contest(OURS, big_rows)
    growth = ours_big.peak_memory_mb / ours.peak_memory_mb
    print(
        f"scale ours' peak memory {growth:.2f}x from {rows:,} to {big_rows:,} rows "
        f"(goal <= {MAX_MEMORY_GROWTH}x)"
    )
    peer_big_run = contest(PEER, big_rows) if peer_big else None
    if peer_big_run is not None:
        print(f"      the peer's {peer_big_run.peak_memory_mb / peer.peak_memory_mb:.2f}x")
    return BatchBenchmark(
        rows=rows,
        big_rows=big_rows,
        input_format=input_format,
        train_rows=train_rows,
        mini_batch_rows=mini_batch_rows,
        peer=peer,
        ours=ours,
        ours_big=ours_big,
        peer_big=peer_big_run,
        speedup=speedup,
        memory_ratio=memory_ratio,
        memory_growth=growth,
        max_probability_difference=difference,
        cpu_count=cores,
        load_average_at_start=load,
        failures=goal_failures(speedup, growth, difference, (ours, ours_big)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, write the JSON, and fail the command when a goal is missed."""
    from backends.local.batch_scoring import DEFAULT_MINI_BATCH_ROWS
    from bench.verdict import report_and_exit_code

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the peer comparison")
    parser.add_argument("--big-rows", type=int, default=5_000_000, help="rows for the memory check")
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv", dest="input_format")
    parser.add_argument("--train-rows", type=int, default=50_000)
    parser.add_argument("--mini-batch-rows", type=int, default=DEFAULT_MINI_BATCH_ROWS)
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--peer-big", action="store_true", help="also run the peer on big-rows")
    parser.add_argument("--no-fail", action="store_true", help="report missed goals, exit 0")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        result = run(
            args.rows,
            args.big_rows,
            args.input_format,
            args.train_rows,
            args.mini_batch_rows,
            args.workers,
            args.peer_big,
            workdir,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report_and_exit_code(result, RESULTS, args.no_fail)


if __name__ == "__main__":
    sys.exit(main())
