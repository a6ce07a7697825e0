"""Serving benchmark: our scoring script against `mlflow models serve` and a plain pyfunc script.

The issue's claim: the scoring script every deployment runs (`components/serving/src/score.py`
in Azure ML's inference server `azmlinfsrv`) serves single-row requests from 8 concurrent
clients at least 5x as fast as `mlflow models serve --env-manager local` and 3x as fast as the
same inference server running the plain MLflow pyfunc script a no-code MLflow deployment runs,
with a p99 at most a third of each; on 1,000-row batches at least 5x `mlflow models serve` with
a p99 at most a third. All of them serve the same saved model (50,000 training rows), one after
the other, fed by the same load generator (one keep-alive httpx client per thread,
pre-encoded bodies), and each is stopped by pid afterwards.

Ours runs as deployed: the deployment YAML's environment variables (WORKER_COUNT=2) and data
collection on, posting to a stand-in for the collector sidecar (`bench/collector_sink.py`). The
goals judge that. The same script with collection off runs too, reported beside it, so the
cost of collection is a measured figure; when a goal is missed `bench/profile_score.py` times
each step of `run()` in-process and the run prints it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import psutil
import yaml

from backends.processes import stop_group
from backends.serving_package import (
    CONDA_FILE,
    SCORING_SCRIPT,
    code_snapshot,
    deployment_template,
    inference_venv,
    model_settings,
)
from bench.train import load_train_script
from bench.verdict import report_and_exit_code
from records.workspace import ModelVersion
from synthetic_data.readmissions import generate_readmissions

LABEL = "readmitted_30d"
REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "serve.json"
PYFUNC_SCRIPT = BENCH_DIR / "pyfunc_score.py"
PYFUNC_CONDA_FILE = BENCH_DIR / "results" / "pyfunc-conda.yml"
"""The inference environment plus mlflow-skinny, written from CONDA_FILE on every run (the
venv it names is built once per content hash, like a deployment's)."""
PROFILER = BENCH_DIR / "profile_score.py"
MODEL = ModelVersion(name="readmission", version="1", source="bench", run_id=None)
MODEL_FOLDER = "model"
CHECK_ROWS = 1_000

OURS = "ours"
OURS_NO_COLLECTION = "ours, no collection"
MLFLOW = "mlflow serve"
PYFUNC = "pyfunc script"
PEERS = (MLFLOW, PYFUNC)
GOALS: Mapping[tuple[str, str], tuple[float, float]] = {
    ("single", MLFLOW): (5.0, 1 / 3),
    ("single", PYFUNC): (3.0, 1 / 3),
    ("batch", MLFLOW): (5.0, 1 / 3),
}
"""(mode, peer) -> (least throughput ratio, largest p99 ratio) for ours as deployed; every
other pair is reported without a goal."""
MAX_PROBABILITY_DIFFERENCE = 1e-6


@dataclass(frozen=True)
class LoadResult:
    """One server under one load: what the clients saw."""

    requests: int
    errors: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    client_cpu_percent: float
    """CPU the load generator itself used (% of one core): near 100 means it, not the server,
    may be the limit."""
    server_cpu_ms: float = math.nan
    """CPU the server's processes used per request (all workers, via psutil, until collection
    caught up): what a request costs, whatever else shares the cores."""
    collection_lag_seconds: float | None = None
    """With collection on: how long after the last response the sidecar stand-in had every
    row sent so far (the collector posts from a background thread, so part of its work falls
    after the measured window); NaN if some never arrived."""
    sidecar_cpu_ms: float | None = None
    """With collection on: CPU the sidecar stand-in used per request (not in server_cpu_ms)."""


@dataclass(frozen=True)
class ServerResult:
    """One server: how it ran, how fast it was ready, both loads, its answers against ours."""

    name: str
    runs: str
    workers: str
    ready_seconds: float
    single: LoadResult
    batch: LoadResult
    max_probability_difference_from_ours: float
    collected_rows: Mapping[str, int] | None
    """Rows the sidecar stand-in received per collection, of `rows_sent` (collection on)."""
    rows_sent: int


@dataclass(frozen=True)
class Ratio:
    """One of ours against one peer for one request shape; goals None where none is set."""

    mode: str
    ours: str
    peer: str
    throughput_ratio: float
    p99_ratio: float
    cpu_ratio: float
    """CPU per request, ours (server + sidecar stand-in) over the peer's: a shared machine
    moves it far less than throughput."""
    min_throughput_ratio: float | None
    max_p99_ratio: float | None


@dataclass(frozen=True)
class ServeBenchmark:
    train_rows: int
    servers: tuple[ServerResult, ...]
    ratios: tuple[Ratio, ...]
    profile: str | None
    """Where ours spends a request's time (bench/profile_score.py), when it ran."""
    lifecycle_wall_seconds: float | None
    cpu_count: int
    load_average_at_start: float
    failures: tuple[str, ...]


@dataclass(frozen=True)
class ServerPlan:
    """How to start one server and talk to it."""

    name: str
    runs: str
    workers: str
    command: list[str]
    environment: dict[str, str]
    cwd: Path
    port: int
    health_path: str
    scoring_path: str
    body_key: str
    probabilities: Callable[[Any], list[float]]
    """The positive-class probabilities out of a decoded response body."""


@dataclass(frozen=True)
class Load:
    mode: str
    rows_per_request: int
    clients: int
    requests: int

    @property
    def warm_up_requests(self) -> int:
        return max(2 * self.clients, self.requests // 50)


def lifecycle_wall_time() -> float | None:
    """Fresh state to prod serving: `mlops demo` in an empty local root, its own Prefect
    server start included (goal: under 3 minutes on 2 cores). None if the demo failed."""
    root = Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
    env = {**os.environ, "MLOPS_ROOT": str(root)}
    env.pop("PREFECT_API_URL", None)
    mlops = [sys.executable, "-m", "mlops_cli.main"]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [*mlops, "demo"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900
        )
        seconds = time.perf_counter() - started
    finally:
        subprocess.run([*mlops, "server", "stop"], env=env, cwd=REPO_ROOT, capture_output=True)
    if done.returncode != 0:
        print(
            f"lifecycle failed (exit {done.returncode}): {done.stdout[-800:]}{done.stderr[-800:]}"
        )
        return None
    return seconds


def save_model(directory: Path, rows: int) -> Path:
    """Train and save exactly as the training component does (skops, input example), in the
    folder layout Azure ML mounts: AZUREML_MODEL_DIR=<root>/azureml-models/<name>/<version>
    holding the registered folder. Returns AZUREML_MODEL_DIR."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    train = load_train_script()
    frame = generate_readmissions(rows, seed=0)
    features, labels = frame.drop(columns=[LABEL]), frame[LABEL]
    model = train.build_model(features)
    model.fit(features, labels)
    example = features.head(5)
    model_dir = directory / "azureml-models" / MODEL.name / MODEL.version
    mlflow.sklearn.save_model(
        model,
        str(model_dir / MODEL_FOLDER),
        signature=infer_signature(example, model.predict_proba(example)[:, 1]),
        input_example=example,
        pyfunc_predict_fn="predict_proba",
        skops_trusted_types=train.trusted_types(model),
    )
    return model_dir


def pyfunc_environment() -> Path:
    """The inference conda file plus mlflow-skinny at the project's MLflow version (the one
    that saved the model): the pyfunc script's environment, built like a deployment's."""
    spec = yaml.safe_load(CONDA_FILE.read_text())
    spec["name"] = f"{spec['name']}-mlflow-pyfunc"
    mlflow = f"mlflow-skinny=={importlib.metadata.version('mlflow')}"
    for dependency in spec["dependencies"]:
        if isinstance(dependency, dict) and "pip" in dependency:
            dependency["pip"] = [*dependency["pip"], mlflow]
    PYFUNC_CONDA_FILE.parent.mkdir(parents=True, exist_ok=True)
    text = f"# Generated by bench/serve.py from {CONDA_FILE.relative_to(REPO_ROOT)}.\n"
    PYFUNC_CONDA_FILE.write_text(text + yaml.safe_dump(spec, sort_keys=False))
    return PYFUNC_CONDA_FILE


def split_bodies(rows: pd.DataFrame, per_request: int, key: str) -> list[bytes]:
    """Pre-encoded bodies so the clients spend nothing on JSON: {key: {columns, data}}."""
    columns, data = list(rows.columns), rows.to_numpy().tolist()
    return [
        orjson.dumps({key: {"columns": columns, "data": data[i : i + per_request]}})
        for i in range(0, len(data) - per_request + 1, per_request)
    ]


def run_load(url: str, bodies: Sequence[bytes], clients: int, requests: int) -> LoadResult:
    """`requests` POSTs shared by `clients` threads, each with its own keep-alive client."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per_client = [requests // clients + (i < requests % clients) for i in range(clients)]
    headers = {"Content-Type": "application/json"}

    def client(count: int, offset: int) -> None:
        mine, failed = [], 0
        with httpx.Client(headers=headers, timeout=120) as session:
            for i in range(count):
                started = time.perf_counter()
                try:
                    response = session.post(url, content=bodies[(offset + i) % len(bodies)])
                    failed += response.status_code != 200
                except httpx.HTTPError:
                    failed += 1
                mine.append((time.perf_counter() - started) * 1000)
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [
        threading.Thread(target=client, args=(count, i * 7919))
        for i, count in enumerate(per_client)
    ]
    cpu, started = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return LoadResult(
        requests=len(latencies),
        errors=errors[0],
        seconds=seconds,
        requests_per_second=len(latencies) / seconds,
        p50_ms=float(np.percentile(latencies, 50)),
        p99_ms=float(np.percentile(latencies, 99)),
        client_cpu_percent=100 * (time.process_time() - cpu) / seconds,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slug(name: str) -> str:
    return re.sub(r"\W+", "-", name).strip("-")


def spawn(command: list[str], log_path: Path, **options: Any) -> subprocess.Popen[bytes]:
    """A server in a session of its own, so stop() can end it and all its workers by pid."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **options,
        )


def wait_ready(
    process: subprocess.Popen[bytes], url: str, name: str, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited with {process.returncode}; its log:\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(process.pid)
    tail = log_path.read_text(errors="replace")[-3000:]
    raise TimeoutError(f"{name} not ready after {timeout:.0f} s; its log:\n{tail}")


def stop(pid: int, timeout: float = 15) -> None:
    """SIGTERM its process group (we made it a session leader), then SIGKILL."""
    stop_group(pid, timeout, kill_timeout=timeout)


def session_cpu_seconds(session: int) -> float:
    """User + system CPU of every live process in a session (a server and its workers)."""
    seconds = 0.0
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session:
                times = process.cpu_times()
                seconds += times.user + times.system
        except (OSError, psutil.Error):  # gone since the listing
            continue
    return seconds


def runtime_dir(workdir: Path, name: str) -> str:
    """An XDG_RUNTIME_DIR of the server's own: gunicorn's control socket lives there, and two
    servers sharing one collide."""
    path = workdir / "runtime" / slug(name)
    path.mkdir(parents=True, mode=0o700)
    return str(path)


class CollectorSink:
    """The collector sidecar's stand-in (bench/collector_sink.py) in a process of its own."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        log = workdir / "collector-sink.log"
        command = [sys.executable, "-m", "bench.collector_sink", "--port", str(self.port)]
        self.pid = spawn(command, log, cwd=REPO_ROOT).pid
        self.url = f"http://127.0.0.1:{self.port}"

    def settings(self) -> dict[str, str]:
        """What Azure ML sets in a deployment's container when its collection is on."""
        return {
            "AZUREML_MDC_ENABLED": "true",
            "AZUREML_MDC_HOST": "127.0.0.1",
            "AZUREML_MDC_PORT": str(self.port),
        }

    def received(self) -> dict[str, int]:
        return orjson.loads(httpx.get(f"{self.url}/count", timeout=5).content)

    def lag(self, rows: int, timeout: float = 60) -> float:
        """Seconds until both collections hold `rows` rows (NaN if they never do)."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            counts = self.received()
            if min(counts.get(c, 0) for c in ("model_inputs", "model_outputs")) >= rows:
                return time.perf_counter() - started
            time.sleep(0.05)
        return math.nan


def inference_server(
    name: str,
    runs: str,
    venv: Path,
    code: Path,
    model_dir: Path,
    variables: Mapping[str, str],
    workdir: Path,
    probabilities: Callable[[Any], list[float]],
) -> ServerPlan:
    """`azmlinfsrv` from `venv` serving `code/score.py`, as a deployment's container runs it."""
    port = free_port()
    bin_dir = venv / "bin"
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "XDG_RUNTIME_DIR": runtime_dir(workdir, name),
        "AZUREML_MODEL_DIR": str(model_dir),
        **variables,
    }
    environment.pop("VIRTUAL_ENV", None)
    command = [str(bin_dir / "azmlinfsrv"), "--entry_script", SCORING_SCRIPT]
    return ServerPlan(
        name=name,
        runs=runs,
        workers=f"{variables['WORKER_COUNT']} gunicorn workers (the deployment's WORKER_COUNT)",
        command=[*command, "--port", str(port)],
        environment=environment,
        cwd=code,
        port=port,
        health_path="/",
        scoring_path="/score",
        body_key="input_data",
        probabilities=probabilities,
    )


def mlflow_serve(model_dir: Path, workdir: Path) -> ServerPlan:
    """`mlflow models serve` with its default workers (it execs uvicorn from PATH: venv first)."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "XDG_RUNTIME_DIR": runtime_dir(workdir, MLFLOW),
    }
    workers = environment.get("MLFLOW_MODELS_WORKERS")
    command = [str(bin_dir / "mlflow"), "models", "serve", "-m", str(model_dir / MODEL_FOLDER)]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    return ServerPlan(
        name=MLFLOW,
        runs="mlflow models serve --env-manager local, the project venv's MLflow",
        workers=(
            f"{workers} uvicorn workers (MLFLOW_MODELS_WORKERS)"
            if workers
            else "1 uvicorn worker (its default, MLFLOW_MODELS_WORKERS unset)"
        ),
        command=command,
        environment=environment,
        cwd=workdir,
        port=port,
        health_path="/ping",
        scoring_path="/invocations",
        body_key="dataframe_split",
        probabilities=lambda body: [p[1] for p in body["predictions"]],
    )


def measure(
    plan: ServerPlan,
    loads: Sequence[Load],
    rows: pd.DataFrame,
    workdir: Path,
    sink: CollectorSink | None = None,
) -> tuple[ServerResult, list[float]]:
    """Start, answer the same 1,000 rows, run every load (after a short warm-up), stop. With
    a sink, wait after each load until it has every row sent so far (the collection lag)."""
    log = workdir / f"{slug(plan.name)}.log"
    started = time.perf_counter()
    process = spawn(plan.command, log, cwd=plan.cwd, env=plan.environment)
    try:
        health = f"http://127.0.0.1:{plan.port}{plan.health_path}"
        wait_ready(process, health, plan.name, log, timeout=180)
        ready = time.perf_counter() - started
        url = f"http://127.0.0.1:{plan.port}{plan.scoring_path}"
        answer = httpx.post(
            url,
            content=split_bodies(rows, CHECK_ROWS, plan.body_key)[0],
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        answer.raise_for_status()
        probabilities = plan.probabilities(answer.json())
        sent = CHECK_ROWS
        results = {}
        for load in loads:
            bodies = split_bodies(rows, load.rows_per_request, plan.body_key)
            run_load(url, bodies, load.clients, load.warm_up_requests)
            sent += load.rows_per_request * load.warm_up_requests
            sidecar = 0.0
            if sink is not None:
                sink.lag(sent)  # the warm-up's rows are in before the clock starts
                sidecar = session_cpu_seconds(sink.pid)
            cpu = session_cpu_seconds(process.pid)
            result = run_load(url, bodies, load.clients, load.requests)
            sent += load.rows_per_request * load.requests
            if sink is not None:
                lag = sink.lag(sent)
                sidecar = 1000 * (session_cpu_seconds(sink.pid) - sidecar) / load.requests
                result = replace(result, collection_lag_seconds=lag, sidecar_cpu_ms=sidecar)
            cpu_ms = 1000 * (session_cpu_seconds(process.pid) - cpu) / load.requests
            results[load.mode] = replace(result, server_cpu_ms=cpu_ms)
    finally:
        stop(process.pid)
    return ServerResult(
        name=plan.name,
        runs=plan.runs,
        workers=plan.workers,
        ready_seconds=ready,
        single=results["single"],
        batch=results["batch"],
        max_probability_difference_from_ours=math.nan,  # set once ours has answered
        collected_rows=sink.received() if sink is not None else None,
        rows_sent=sent,
    ), probabilities


def profile(
    venv: Path, code: Path, model_dir: Path, environment: Mapping[str, str], rows: pd.DataFrame
) -> str:
    """bench/profile_score.py in the inference venv: where one request's time goes."""
    bodies = [
        {"name": "single-row", "body": split_bodies(rows, 1, "input_data")[0], "repeat": 1_000},
        {"name": "1,000-row", "body": split_bodies(rows, 1_000, "input_data")[0], "repeat": 40},
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as file:
        for body in bodies:
            file.write(json.dumps({**body, "body": body["body"].decode()}) + "\n")
        file.flush()
        done = subprocess.run(
            [str(venv / "bin" / "python"), str(PROFILER), "--code", str(code)]
            + ["--bodies", file.name],
            env={**os.environ, **environment, "AZUREML_MODEL_DIR": str(model_dir)},
            capture_output=True,
            text=True,
            timeout=300,
        )
    if done.returncode != 0:
        return f"the profiler failed (exit {done.returncode}): {done.stderr[-2000:]}"
    lines = done.stdout.splitlines()
    return "\n".join(line for line in lines if " | mdc | " not in line)  # the collector's log


def describe(server: ServerResult, mode: str) -> str:
    result: LoadResult = getattr(server, mode)
    line = (
        f"  {server.name:<20}{result.requests_per_second:7.1f} req/s  p50 {result.p50_ms:6.1f} ms"
        f"  p99 {result.p99_ms:6.1f} ms  {result.errors} errors  server CPU "
        f"{result.server_cpu_ms:5.2f} ms/req  ({result.requests:,} in {result.seconds:.1f} s, "
        f"load generator {result.client_cpu_percent:.0f}% CPU)"
    )
    lag = result.collection_lag_seconds
    if lag is not None:
        line += (
            f"\n  {'':<22}collection caught up {lag:.1f} s after the last response "
            f"({result.requests / (result.seconds + lag):.1f} req/s counting that); the "
            f"sidecar stand-in used {result.sidecar_cpu_ms:.2f} ms of CPU per request"
        )
    return line


def ratio(mode: str, ours: ServerResult, peer: ServerResult) -> Ratio:
    mine, theirs = getattr(ours, mode), getattr(peer, mode)
    least, largest = (
        GOALS.get((mode, peer.name), (None, None)) if ours.name == OURS else (None,) * 2
    )
    return Ratio(
        mode=mode,
        ours=ours.name,
        peer=peer.name,
        throughput_ratio=mine.requests_per_second / theirs.requests_per_second,
        p99_ratio=mine.p99_ms / theirs.p99_ms,
        cpu_ratio=(mine.server_cpu_ms + (mine.sidecar_cpu_ms or 0.0)) / theirs.server_cpu_ms,
        min_throughput_ratio=least,
        max_p99_ratio=largest,
    )


def describe_ratio(r: Ratio) -> str:
    pair = f"{r.ours} vs {r.peer}"
    head = (
        f"  {pair:<38}throughput {r.throughput_ratio:5.2f}x  p99 {r.p99_ratio:5.3f}x  "
        f"CPU/request {r.cpu_ratio:5.3f}x"
    )
    if r.min_throughput_ratio is None or r.max_p99_ratio is None:
        return f"{head}  (no goal)"
    throughput_met = r.throughput_ratio >= r.min_throughput_ratio
    p99_met = r.p99_ratio <= r.max_p99_ratio
    return (
        f"{head}  goal >= {r.min_throughput_ratio:.0f}x {'met' if throughput_met else 'MISSED'}"
        f", <= {r.max_p99_ratio:.3f}x {'met' if p99_met else 'MISSED'}"
    )


def goal_failures(servers: Sequence[ServerResult], ratios: Sequence[Ratio]) -> tuple[str, ...]:
    failures = []
    for r in ratios:
        if r.min_throughput_ratio is not None and r.throughput_ratio < r.min_throughput_ratio:
            failures.append(
                f"{r.mode}: throughput {r.throughput_ratio:.2f}x {r.peer}'s, goal "
                f"{r.min_throughput_ratio:.0f}x"
            )
        if r.max_p99_ratio is not None and r.p99_ratio > r.max_p99_ratio:
            failures.append(
                f"{r.mode}: p99 {r.p99_ratio:.2f} of {r.peer}'s, goal <= {r.max_p99_ratio:.2f}"
            )
    for server in servers:
        for mode in ("single", "batch"):
            if getattr(server, mode).errors:
                failures.append(f"{mode}: {server.name} failed {getattr(server, mode).errors}")
        if not server.max_probability_difference_from_ours <= MAX_PROBABILITY_DIFFERENCE:
            failures.append(
                f"ours and {server.name} disagree by up to "
                f"{server.max_probability_difference_from_ours:.2e} in probability"
            )
        if server.collected_rows is not None and not all(
            server.collected_rows.get(c, 0) >= server.rows_sent
            for c in ("model_inputs", "model_outputs")
        ):
            failures.append(
                f"{server.name}: collected {server.collected_rows} of {server.rows_sent:,} rows"
            )
    return tuple(failures)


def run(
    train_rows: int, loads: Sequence[Load], workdir: Path, lifecycle: bool, always_profile: bool
) -> ServeBenchmark:
    """Train once, then the same loads against each server in turn, stopping each by pid."""
    cores, load_average = os.cpu_count() or 0, os.getloadavg()[0]
    print(f"model {train_rows:,} training rows; {cores} cores, load {load_average:.1f}")
    if load_average > 0.5 * cores:
        print("      other processes are using the CPUs: timings will be noisy")
    model_dir = save_model(workdir, train_rows)
    rows = generate_readmissions(10_000, seed=7).drop(columns=[LABEL])
    variables = {
        **dict(deployment_template().environment_variables or {}),
        **model_settings(MODEL),
    }
    code = code_snapshot(workdir / "code")
    pyfunc_code = workdir / "pyfunc-code"
    pyfunc_code.mkdir()
    shutil.copy2(PYFUNC_SCRIPT, pyfunc_code / SCORING_SCRIPT)
    built = time.perf_counter()
    venv, pyfunc_venv = inference_venv(), inference_venv(pyfunc_environment())
    print(
        f"inference venvs ready in {time.perf_counter() - built:.0f} s: {venv.name} (ours), "
        f"{pyfunc_venv.name} (the same + mlflow-skinny)"
    )

    def ours(name: str, runs: str, collection: Mapping[str, str]) -> ServerPlan:
        return inference_server(
            name,
            runs,
            venv,
            code,
            model_dir,
            {**variables, **collection},
            workdir,
            lambda body: [p["probability"] for p in body["predictions"]],
        )

    plans = {
        MLFLOW: mlflow_serve(model_dir, workdir),
        PYFUNC: inference_server(
            PYFUNC,
            "bench/pyfunc_score.py (mlflow.pyfunc) in azmlinfsrv",
            pyfunc_venv,
            pyfunc_code,
            model_dir,
            {**variables, "MLFLOW_MODEL_FOLDER": MODEL_FOLDER},
            workdir,
            lambda body: [p[1] for p in body],
        ),
        OURS_NO_COLLECTION: ours(
            OURS_NO_COLLECTION, "components/serving/src/score.py in azmlinfsrv, collection off", {}
        ),
    }
    measured = {name: measure(plan, loads, rows, workdir) for name, plan in plans.items()}
    sink = CollectorSink(workdir)
    try:
        plans[OURS] = ours(
            OURS,
            "components/serving/src/score.py in azmlinfsrv, collection on (as deployed)",
            sink.settings(),
        )
        measured[OURS] = measure(plans[OURS], loads, rows, workdir, sink)
        servers = {
            name: replace(
                result,
                max_probability_difference_from_ours=float(
                    np.max(np.abs(np.subtract(probabilities, measured[OURS][1])))
                ),
            )
            for name, (result, probabilities) in measured.items()
        }
        ratios = [
            ratio(load.mode, servers[mine], servers[peer])
            for load in loads
            for mine in (OURS, OURS_NO_COLLECTION)
            for peer in PEERS
        ]
        failures = goal_failures(list(servers.values()), ratios)
        report(servers, ratios, loads)
        profiled = None
        if failures or always_profile:
            print("where ours spends a request's time (in-process, collection on):")
            profiled = profile(venv, code, model_dir, {**variables, **sink.settings()}, rows)
            print(profiled)
    finally:
        stop(sink.pid)
    wall = lifecycle_wall_time() if lifecycle else None
    if lifecycle:
        print(
            "lifecycle wall time: "
            + ("failed" if wall is None else f"{wall:.1f} s fresh state to prod (goal < 180 s)")
        )
    return ServeBenchmark(
        train_rows=train_rows,
        servers=tuple(servers[name] for name in (OURS, OURS_NO_COLLECTION, *PEERS)),
        ratios=tuple(ratios),
        profile=profiled,
        lifecycle_wall_seconds=wall,
        cpu_count=cores,
        load_average_at_start=load_average,
        failures=failures,
    )


def report(
    servers: Mapping[str, ServerResult], ratios: Sequence[Ratio], loads: Sequence[Load]
) -> None:
    order = [servers[name] for name in (OURS, OURS_NO_COLLECTION, *PEERS)]
    for server in order:
        print(
            f"{server.name}: {server.runs}; {server.workers}; ready in {server.ready_seconds:.1f} s"
        )
    for load in loads:
        shape = "single-row" if load.rows_per_request == 1 else f"{load.rows_per_request:,}-row"
        print(
            f"{load.mode}: {shape} requests, {load.clients} client threads, "
            f"{load.requests:,} requests per server"
        )
        for server in order:
            print(describe(server, load.mode))
        for r in ratios:
            if r.mode == load.mode:
                print(describe_ratio(r))
    for server in order[1:]:
        print(
            f"same answers: max |ours - {server.name}| probability on {CHECK_ROWS:,} rows = "
            f"{server.max_probability_difference_from_ours:.2e}"
        )
    collected = servers[OURS].collected_rows
    print(
        f"data collection: the sidecar stand-in received {collected} of "
        f"{servers[OURS].rows_sent:,} rows sent"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, write the JSON, and fail the command when a goal is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=50_000)
    parser.add_argument("--single-requests", type=int, default=2_000, help="per server")
    parser.add_argument("--batch-requests", type=int, default=200, help="per server")
    parser.add_argument("--batch-rows", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--profile", action="store_true", help="profile ours even if it passes")
    parser.add_argument(
        "--lifecycle", action="store_true", help="also time `mlops demo` from a fresh state"
    )
    parser.add_argument("--no-fail", action="store_true", help="report missed goals, exit 0")
    args = parser.parse_args(argv)
    loads = (
        Load("single", 1, args.clients, args.single_requests),
        Load("batch", args.batch_rows, args.clients, args.batch_requests),
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        result = run(args.train_rows, loads, workdir, args.lifecycle, args.profile)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report_and_exit_code(result, RESULTS, args.no_fail)


if __name__ == "__main__":
    sys.exit(main())
