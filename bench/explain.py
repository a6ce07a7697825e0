"""What an explanation costs: `POST /score?explain=true` against the plain `POST /score`.

The scoring script (components/serving/src/score.py) runs as a deployment runs it: Azure ML's
inference server `azmlinfsrv` from the inference venv, one gunicorn worker, the code snapshot a
deployment gets, data collection off (it costs the same with or without an explanation). One
client sends the same body `--requests` times in each mode, interleaved in rounds (plain,
explain, explain with every feature) so drift in the machine's speed hits every mode alike,
for 1 and 100 rows; each figure is the median latency and its ratio to the plain request of
the same size measured in the same run.

Usage: `.venv/bin/python -m bench.explain [--requests 300] [--rows 1 100]`.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import orjson

from backends.serving_package import SCORING_SCRIPT, code_snapshot, inference_venv
from bench.serve import free_port, runtime_dir, spawn, stop, wait_ready
from data_checks.readmission_schema import FEATURES, LABEL
from synthetic_data.readmissions import generate_readmissions

MODES = {
    "plain": "",
    "explain (top 5)": "?explain=true",
    f"explain (all {len(FEATURES)})": f"?explain=true&explain_top={len(FEATURES)}",
}


@contextlib.contextmanager
def scoring_script(model_dir: Path, workdir: Path, threshold: float = 0.5) -> Iterator[str]:
    """The scoring script in `azmlinfsrv` serving `model_dir`; yields its base URL and stops
    it (by its process group) on exit."""
    venv = inference_venv()
    code = code_snapshot(workdir / "code")
    port = free_port()
    log_path = workdir / f"azmlinfsrv-{port}.log"
    environment = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "XDG_RUNTIME_DIR": runtime_dir(workdir, f"explain-{port}"),
        "AZUREML_MODEL_DIR": str(model_dir),
        "MODEL_NAME": "readmission",
        "MODEL_VERSION": "1",
        "MODEL_THRESHOLD": str(threshold),
        "WORKER_COUNT": "1",
        "OMP_NUM_THREADS": "1",
    }
    command = [
        str(venv / "bin" / "azmlinfsrv"),
        "--entry_script",
        SCORING_SCRIPT,
        "--port",
        str(port),
    ]
    process = spawn(command, log_path, cwd=code, env=environment)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, f"{base_url}/", "the scoring script", log_path, timeout=120)
        yield base_url
    finally:
        stop(process.pid)
        process.wait(timeout=30)


def split_body(n_rows: int, seed: int = 21) -> bytes:
    rows = generate_readmissions(max(n_rows, 50), seed=seed).drop(columns=[LABEL]).head(n_rows)
    return orjson.dumps(
        {"input_data": {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}}
    )


def measure(base_url: str, row_counts: Sequence[int], requests: int) -> dict[int, dict]:
    """Median milliseconds per mode and row count, interleaved rounds of one request each."""
    results: dict[int, dict] = {}
    with httpx.Client(timeout=60) as http:
        for n_rows in row_counts:
            body = split_body(n_rows)
            timings: dict[str, list[float]] = {mode: [] for mode in MODES}
            for round_number in range(requests + 20):  # the first 20 rounds warm up
                for mode, query in MODES.items():
                    started = time.perf_counter()
                    reply = http.post(
                        f"{base_url}/score{query}",
                        content=body,
                        headers={"Content-Type": "application/json"},
                    )
                    elapsed = (time.perf_counter() - started) * 1000
                    if reply.status_code != 200:
                        raise RuntimeError(f"{mode}, {n_rows} rows: {reply.text[:300]}")
                    if round_number >= 20:
                        timings[mode].append(elapsed)
            results[n_rows] = {mode: statistics.median(ms) for mode, ms in timings.items()}
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100])
    args = parser.parse_args(argv)
    from tests.endpoints.models import save_trained_model

    with tempfile.TemporaryDirectory(prefix="bench-explain-") as temporary:
        workdir = Path(temporary)
        model_dir = save_trained_model(workdir / "model")
        with scoring_script(model_dir, workdir) as base_url:
            results = measure(base_url, args.rows, args.requests)
    print(f"median latency per request, {args.requests} requests per figure, one client")
    for n_rows, medians in results.items():
        plain = medians["plain"]
        for mode, ms in medians.items():
            print(f"{n_rows:>4} rows  {mode:<18} {ms:7.2f} ms  {ms / plain:5.2f}x plain")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
