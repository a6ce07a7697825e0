"""What the fake's container instances put on a container's PYTHONPATH (test-only): the
container's network. Inert unless the fake ACI set MLOPS_FAKE_ACI_FRONT.

In Azure a container's SDK calls reach management.azure.com, *.blob.core.windows.net and the
identity endpoint over the network; here they reach the fake through its loopback front
(tests/azure/fake/network.py):

- azure-core's default transports, sync (requests) and async (aiohttp: prefect-azure's blob
  result storage is azure.storage.blob.aio), send each request to the front with the URL it
  was meant for in a header; the URL is rewritten inside the transport only, so the SDKs'
  https checks and bearer-token policies see the real https URL;
- name resolution is limited to loopback (the Prefect API and the front), so nothing escapes;
- the azure backend's connection keeps its real credential (DefaultAzureCredential, which finds
  the container's managed identity through AZURE_POD_IDENTITY_AUTHORITY_HOST) and gets the
  tests' fast retries and deadlines, through `set_connection_factory`, the injection point
  the in-process tests use.
"""

from __future__ import annotations

import importlib.abc
import os
import socket
import sys
from typing import Any

FRONT = os.environ.get("MLOPS_FAKE_ACI_FRONT", "")
FORWARDED_URL = "x-fake-forwarded-url"  # tests/azure/fake/network.py


def _loopback_only() -> None:
    resolve = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        if str(host) not in ("127.0.0.1", "localhost", "::1"):
            raise OSError(f"a request to {host} escaped the fake Azure (container network)")
        return resolve(host, *args, **kwargs)

    socket.getaddrinfo = guarded  # type: ignore[assignment]


def _forwarding_transports() -> None:
    import azure.core.pipeline.transport._aiohttp as aiohttp_module
    import azure.core.pipeline.transport._requests_basic as requests_module

    def aimed(request: Any) -> str:
        original = request.url
        request.headers[FORWARDED_URL] = original
        request.url = FRONT + "/forward"
        return original

    class ForwardingRequestsTransport(requests_module.RequestsTransport):
        def send(self, request: Any, **kwargs: Any) -> Any:
            original = aimed(request)
            try:
                return super().send(request, **kwargs)
            finally:
                request.url = original

    class ForwardingAioHttpTransport(aiohttp_module.AioHttpTransport):
        async def send(self, request: Any, **kwargs: Any) -> Any:
            original = aimed(request)
            try:
                return await super().send(request, **kwargs)
            finally:
                request.url = original

    requests_module.RequestsTransport = ForwardingRequestsTransport  # type: ignore[misc]
    aiohttp_module.AioHttpTransport = ForwardingAioHttpTransport  # type: ignore[misc]


class _FastAzureConnection(importlib.abc.MetaPathFinder):
    """Once backends.azure.clients is imported: the real default credential with the tests'
    fast retries and deadlines (the fake answers at once; Azure's defaults wait minutes)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "backends.azure.clients":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        loader = spec.loader
        execute = loader.exec_module

        def exec_module(module: Any) -> None:
            execute(module)
            from backends.azure.credentials import default_credential
            from tests.azure.conftest import FAST_DEADLINES, FAST_RETRIES

            credential = default_credential()
            module.set_connection_factory(
                lambda: module.AzureConnection(
                    credential=credential, retry=FAST_RETRIES, deadlines=FAST_DEADLINES
                )
            )

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if FRONT:
    import importlib.util

    _loopback_only()
    _forwarding_transports()
    sys.meta_path.insert(0, _FastAzureConnection())
