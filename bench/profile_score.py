"""Where our scoring script spends a request's time, measured in-process (no HTTP, no server).

Runs in the inference venv (`bench.serve --profile` starts it; it imports only what the scoring
script imports): loads `score.py` from a code snapshot as `azmlinfsrv` would, calls `init()`,
then times each step of `run()` on the bodies it is given, and the collector's background
sender too, which runs on a thread of the same worker (same GIL) in a deployment:

- parse: `parse_scoring_request` (orjson + contract validation)
- score: the scorer's probabilities (Treelite's tree walk, or the pipeline)
- respond: labels, the response dict and its JSON
- collect: what `run()` itself spends on data collection (the two DataFrames, the payloads)
- send: the collector's sender per request (`to_json` of both payloads and two HTTP posts to
  the sidecar stand-in at AZUREML_MDC_HOST:AZUREML_MDC_PORT)

then cProfile of whole `run()` calls (collection on, the sender thread off), top functions by
own time. Usage: `<inference venv>/bin/python bench/profile_score.py --code <snapshot>
--bodies <file of JSON lines: {"name": ..., "body": ..., "repeat": n}>` with AZUREML_MODEL_DIR,
MODEL_* and AZUREML_MDC_* set.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def load_script(code: Path) -> Any:
    sys.path.insert(0, str(code))
    spec = importlib.util.spec_from_file_location("score", code / "score.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_call_ms(function: Any, repeat: int) -> tuple[float, float]:
    """(wall, CPU of this thread) per call, in ms."""
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(repeat):
        function()
    return (
        (time.perf_counter() - wall) * 1000 / repeat,
        (time.thread_time() - cpu) * 1000 / repeat,
    )


def request(body: bytes) -> Any:
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    builder = EnvironBuilder(method="POST", data=body, headers={"Content-Type": "application/json"})
    return Request(builder.get_environ())


def profile(score: Any, code: Path, name: str, body: bytes, repeat: int) -> None:
    from azureml.ai.monitoring.queue import get_queue
    from azureml.ai.monitoring.worker.sender import MdcSender
    from model_scoring import predicted_labels
    from request_contract import parse_scoring_request

    served = score._served
    batch = parse_scoring_request(body)
    probabilities = served.scorer.probabilities(batch)
    labels = predicted_labels(probabilities, served.threshold)

    def respond() -> None:
        labelled = predicted_labels(probabilities, served.threshold)
        content = {
            "predictions": [
                {"probability": p, "label": label}
                for p, label in zip(probabilities.tolist(), labelled.tolist(), strict=True)
            ],
            "model": served.model,
        }
        score._reply(200, content)

    queue = get_queue()
    steps = {
        "parse": per_call_ms(lambda: parse_scoring_request(body), repeat),
        "score": per_call_ms(lambda: served.scorer.probabilities(batch), repeat),
        "respond": per_call_ms(respond, repeat),
        "collect": per_call_ms(
            lambda: score._collect(served, batch, probabilities, labels, "profile"), repeat
        ),
    }
    payloads = iter([queue.dequeue()[0] for _ in range(2 * repeat)])
    sender = MdcSender(os.environ["AZUREML_MDC_HOST"], int(os.environ["AZUREML_MDC_PORT"]))
    wall, cpu = per_call_ms(lambda: [sender.send(next(payloads)) for _ in range(2)], repeat)
    steps["send"] = (wall, cpu)
    while queue.length():
        queue.dequeue()
    total = sum(cpu for _, cpu in steps.values())
    print(
        f"{name}: {total:.2f} ms of worker CPU per request, by step (mean of {repeat}; wall "
        "time includes, for send, waiting for the sidecar):"
    )
    for step, (wall, cpu) in steps.items():
        print(f"  {step:<8} CPU {cpu:7.3f} ms {100 * cpu / total:5.1f}%   wall {wall:7.3f} ms")

    calls = [request(body) for _ in range(repeat)]
    profiler = cProfile.Profile()
    profiler.enable()
    for call in calls:
        score.run(call)
    profiler.disable()
    while queue.length():
        queue.dequeue()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(14)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    prefixes = [str(Path(np.__file__).parents[1]) + os.sep, str(code) + os.sep]
    print(
        f"  cProfile of {repeat} run() calls (sender thread off), by cumulative time; the "
        "profiler's own cost inflates small C calls, the step timings above are without it:"
    )
    for line in lines[start:]:
        for prefix in prefixes:
            line = line.replace(prefix, "")
        print(f"    {line.strip()[:140]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, required=True)
    parser.add_argument("--bodies", type=Path, required=True)
    args = parser.parse_args()
    # Collection on, its sender thread off and its queue unbounded: `collect` is what run()
    # spends, `send` is measured on its own, nothing is dropped.
    os.environ.update(
        AZUREML_MDC_ENABLED="true",
        AZUREML_MDC_WORKER_DISABLED="true",
        AZUREML_MDC_QUEUE_CAPACITY=str(10**7),
    )
    score = load_script(args.code)
    score.init()
    for line in args.bodies.read_text().splitlines():
        spec = json.loads(line)
        profile(score, args.code, spec["name"], spec["body"].encode(), spec["repeat"])


if __name__ == "__main__":
    main()
