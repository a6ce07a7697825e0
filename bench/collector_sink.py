"""Stands in for Azure ML's data collector sidecar while `bench.serve` loads our scoring script.

The deployment enables data collection, so our script posts every request's inputs and outputs
to AZUREML_MDC_HOST:AZUREML_MDC_PORT/modeldata/log (azureml-ai-monitoring's sender). On Azure a
sidecar container on the same instance receives them; here this process does, in a process of
its own as the sidecar is, and counts the rows it got so the benchmark can show collection ran.
It does as little as it can (no parsing), so the CPU it takes from the server is mostly HTTP.
`GET /count` answers `{"model_inputs": rows, "model_outputs": rows}`.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

rows: Counter[str] = Counter()
lock = threading.Lock()


class CollectorSink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real sidecar allows
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        collection = self.headers.get("ce-type", "").rpartition(".")[2] or "unknown"
        with lock:  # a JSON array of flat records, one "{" each: counted without parsing
            rows[collection] += body.count(b"{")
        self._answer(200, b"{}")

    def do_GET(self) -> None:
        with lock:
            self._answer(200, json.dumps(dict(rows)).encode())

    def _answer(self, status: int, content: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: object) -> None:  # one line per post is noise
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    ThreadingHTTPServer(("127.0.0.1", port), CollectorSink).serve_forever()


if __name__ == "__main__":
    main()
