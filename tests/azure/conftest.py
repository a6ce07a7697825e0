"""The azure backend under test: the real azure-ai-ml SDK on top of the fake REST API.

`fake_azure` builds the fake with every workspace and the registry the topology names, and
routes both kinds of SDK traffic to it:

- MLClient calls, through the azure-core transport our backend passes to MLClient (the same
  injection point production uses, with no transport given);
- blob storage calls: azure-ai-ml builds its `BlobServiceClient`s internally without passing a
  transport on, so the storage SDK's default `RequestsTransport` is swapped for the fake's for
  the test. Still the HTTP layer: every upload/download is a real storage REST call;
- the few clients azure-ai-ml builds from the credential alone (see registry.py) likewise.

Name resolution is limited to loopback meanwhile, so nothing can reach a real host.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backends.azure.clients import AzureConnection, set_connection_factory
from backends.azure.retries import Deadlines, RetrySettings
from backends.topology import Topology, load_topology
from tests.azure.fake_arm import FakeAzureML, StaticTokenCredential

FAST_RETRIES = RetrySettings(total=8, status=8, backoff_factor=0.01, backoff_max=0.05)
FAST_DEADLINES = Deadlines(lro_seconds=30, job_seconds=30, job_poll_seconds=0.01)


@dataclass
class AzureUnderTest:
    fake: FakeAzureML
    credential: StaticTokenCredential
    topology: Topology


class EscapedTheFake(AssertionError):
    """A request tried to leave the process for a real host."""


def _loopback_only(resolve: Callable[..., Any]) -> Callable[..., Any]:
    """Name resolution for 127.0.0.1/localhost only: a request that slips past the fake fails
    loudly here instead of waiting on a DNS timeout (or reaching Azure)."""

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        if str(host) not in ("127.0.0.1", "localhost", "::1"):
            raise EscapedTheFake(f"a request to {host} escaped the fake Azure")
        return resolve(host, *args, **kwargs)

    return guarded


@contextmanager
def azure_under_test(patch: pytest.MonkeyPatch) -> Iterator[AzureUnderTest]:
    """The fake with every workspace and registry of the topology, all SDK traffic routed to
    it through `patch` (undone by whoever owns `patch`)."""
    import azure.core.pipeline.transport._requests_basic as requests_basic
    import azure.storage.blob._shared.base_client as storage_base

    credential = StaticTokenCredential()
    fake = FakeAzureML(credential)
    topology = load_topology()
    for spec in topology.environments.values():
        fake.add_workspace(
            spec.subscription_id, spec.resource_group, spec.workspace, (spec.compute,)
        )
    registry = topology.shared_registry
    fake.add_registry(registry.subscription_id, registry.resource_group, registry.name)
    transport = fake.transport()
    patch.setattr(storage_base, "RequestsTransport", lambda **_: fake.transport())
    # clients the SDK builds for itself with only a credential (registry discovery inside
    # `models.share` and the deployment-template check) get azure-core's default transport
    patch.setattr(requests_basic, "RequestsTransport", lambda **_: fake.transport())
    patch.setattr(socket, "getaddrinfo", _loopback_only(socket.getaddrinfo))
    set_connection_factory(
        lambda: AzureConnection(
            credential=credential,
            transport=transport,
            retry=FAST_RETRIES,
            deadlines=FAST_DEADLINES,
        )
    )
    try:
        yield AzureUnderTest(fake, credential, topology)
    finally:
        set_connection_factory(None)


@pytest.fixture
def fake_azure(mlops_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AzureUnderTest]:
    with azure_under_test(monkeypatch) as azure:
        yield azure


@pytest.fixture(scope="module")
def fake_azure_for_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureUnderTest]:
    """One fake Azure and one MLOPS_ROOT for a module whose tests build on each other, the
    way a team's week of releases does (each release trains: minutes, not seconds)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_ROOT", str(tmp_path_factory.mktemp("azure") / "mlops"))
        with azure_under_test(patch) as azure:
            yield azure
