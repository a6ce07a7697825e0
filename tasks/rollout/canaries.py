"""Canary requests during a rollout, sent through the endpoint's normal route.

They carry no `azureml-model-deployment` header: on Azure that header sends a request to the
named deployment whatever the weights are, so canaries forced that way would make "mirror
20%", "10% live" and "50% live" measure the same thing. Sent through the route, a canary
reaches the new deployment at the step's share (or as a mirrored copy), like a user's request,
and fills the gap when users alone would not give a step enough requests to judge.

Each canary's request id starts with `canary-`, so its collected inputs can be told from users'
(the drift monitor leaves them out). Which deployment answered comes back in the
`azureml-model-deployment` response header, which both backends set.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

import httpx
import pandas as pd

from tasks.release.integration_tests import split_body

CANARY_PREFIX = "canary-"
IN_FLIGHT = 8
"""Canaries waiting for an answer beyond this are not sent: a slow endpoint is not flooded."""


@dataclass(frozen=True)
class CanaryAnswer:
    at: float  # epoch seconds, when the answer came
    deployment: str | None  # from the azureml-model-deployment header
    status: int | None  # None: no answer (transport error)


class Canaries:
    """A background sender at a settable rate; `answered_by(start, end)` counts the answers
    per deployment in a window."""

    def __init__(self, scoring_uri: str, key: str, rows: pd.DataFrame) -> None:
        self._uri = scoring_uri
        self._bodies = [split_body(rows.iloc[[i]]) for i in range(len(rows))]
        self._http = httpx.Client(
            timeout=10,
            headers={"Authorization": f"Bearer {key}"},
            limits=httpx.Limits(max_connections=IN_FLIGHT),
        )
        self._pool = ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="canary")
        self._rate = 0.0
        self._answers: list[CanaryAnswer] = []
        self._in_flight = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canaries", daemon=True)

    def __enter__(self) -> Canaries:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    def set_rate(self, per_second: float) -> None:
        self._rate = max(0.0, per_second)

    def answered_by(self, start: float, end: float) -> Counter[str]:
        with self._lock:
            return Counter(
                a.deployment or "?" for a in self._answers if start <= a.at < end and a.status
            )

    def _run(self) -> None:
        sent = 0
        while not self._stopped.is_set():
            rate = self._rate
            if rate <= 0:
                self._stopped.wait(0.2)
                continue
            with self._lock:
                busy = self._in_flight >= IN_FLIGHT
                if not busy:
                    self._in_flight += 1
            if not busy:
                self._pool.submit(self._send, self._bodies[sent % len(self._bodies)])
                sent += 1
            self._stopped.wait(1 / rate)

    def _send(self, body: dict) -> None:
        answer = CanaryAnswer(time.time(), None, None)
        try:
            with contextlib.suppress(httpx.HTTPError):
                reply = self._http.post(
                    self._uri, json=body, headers={"x-request-id": CANARY_PREFIX + uuid.uuid4().hex}
                )
                answer = CanaryAnswer(
                    time.time(), reply.headers.get("azureml-model-deployment"), reply.status_code
                )
        finally:
            with self._lock:
                self._answers.append(answer)
                self._in_flight -= 1
