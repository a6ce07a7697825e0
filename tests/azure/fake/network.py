"""The network of the fake's container groups (test-only plumbing): an HTTP front on a free
loopback port through which a container's processes reach the fake.

A container process has no in-memory transport to the fake: tests/azure/aci_host/
sitecustomize.py sends every azure-core request (sync and async) here instead, with the URL it
was meant for in `FORWARDED_URL`; the front turns it into the fake's `SeenRequest` for that URL
and answers with `fake.handle`, as the in-memory transport does in the test process. Requests
to the front's own URL (the per-group IMDS path the fake ACI sets as
AZURE_POD_IDENTITY_AUTHORITY_HOST) keep their URL. `before` hooks see each request first (the
tests' stand-in for Azure ML's compute uses one to run a submitted pipeline's components).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from tests.azure.fake.http import SeenRequest

if TYPE_CHECKING:
    from tests.azure.fake_arm import FakeAzureML

FORWARDED_URL = "x-fake-forwarded-url"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", FORWARDED_URL}


class ContainerNetwork:
    """The front: started once per fake, stopped with it."""

    def __init__(self, fake: FakeAzureML) -> None:
        self.fake = fake
        self.before: list[Callable[[SeenRequest], None]] = []
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = self.headers.get(FORWARDED_URL) or f"{front.url}{self.path}"
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                seen = SeenRequest(self.command, url, headers, body)
                for hook in front.before:
                    hook(seen)
                data, reply_headers = front.fake.handle(seen).encoded()
                self.send_response(seen.status)
                for key, value in reply_headers.items():
                    if key.lower() not in ("content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _forward  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
