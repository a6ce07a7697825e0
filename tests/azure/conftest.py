"""The azure backend under test: the real azure-ai-ml SDK on top of the fake REST API.

`fake_azure` builds the fake with every workspace and the registry the topology names, and
routes both kinds of SDK traffic to it:

- MLClient calls, through the azure-core transport our backend passes to MLClient (the same
  injection point production uses, with no transport given);
- blob storage calls: azure-ai-ml builds its `BlobServiceClient`s internally without passing a
  transport on, so the storage SDK's default `RequestsTransport` is swapped for the fake's for
  the test. Still the HTTP layer: every upload/download is a real storage REST call;
- the few clients azure-ai-ml builds from the credential alone (see registry.py) likewise.

The fake starts as `infra` leaves a subscription: the shared registry's and every environment's
Bicep (the compiled-template fixtures of tests/azure/fixtures/bicep with the values of
infra/parameters/*.bicepparam) run through the fake's template engine, so the endpoint
identities exist and hold the roles main.bicep grants them, and each workspace's datastores
point at the storage account main.bicep made for it. Name resolution is limited to
loopback meanwhile, so nothing can reach a real host; the fake's serving (front door,
deployment containers) is stopped when the fake goes.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from backends.azure.clients import AzureConnection, set_connection_factory
from backends.azure.retries import Deadlines, RetrySettings
from backends.topology import Topology, load_topology
from tests.azure.fake_arm import FakeAzureML, StaticTokenCredential

REPO = Path(__file__).resolve().parents[2]
BICEP_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bicep"
FAST_RETRIES = RetrySettings(total=8, status=8, backoff_factor=0.01, backoff_max=0.05)
FAST_DEADLINES = Deadlines(lro_seconds=240, job_seconds=30, job_poll_seconds=0.01)
"""A deployment's operation lasts while its container starts: seconds, or the first build of
its environment's venv (about 40 s, once per conda file)."""


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


def _stand_in_bicep() -> ModuleType:
    """The Bicep CLI stand-in (fixtures/bicep/bicep), for its reading of .bicepparam files."""
    loader = SourceFileLoader("bicep_stand_in", str(BICEP_FIXTURES / "bicep"))
    module = module_from_spec(spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def deploy_infra(fake: FakeAzureML, topology: Topology) -> None:
    """What `infra` deploys, as the fake's Resource Manager runs it: shared.bicep, then
    main.bicep for every environment (identities, their role assignments, ...)."""
    bicep = _stand_in_bicep()
    registry = topology.shared_registry
    fake.deploy_template(
        json.loads((BICEP_FIXTURES / "shared.json").read_text()),
        bicep.parameters(REPO / "infra" / "parameters" / "shared.bicepparam"),
        registry.subscription_id,
        registry.location,
        "mlops-shared",
    )
    main = json.loads((BICEP_FIXTURES / "main.json").read_text())
    for name, spec in topology.environments.items():
        fake.deploy_template(
            main,
            bicep.parameters(REPO / "infra" / "parameters" / f"{name}.bicepparam"),
            spec.subscription_id,
            spec.location,
            f"mlops-{name}",
        )


def _storage_account_of(fake: FakeAzureML, subscription: str, resource_group: str) -> str:
    """The storage account main.bicep made in the environment's resource group: the one its
    workspace's datastores point at (so role assignments on it are the ones that count)."""
    group = f"/subscriptions/{subscription}/resourcegroups/{resource_group}/".lower()
    (account,) = (
        doc["name"]
        for rid, doc in fake.arm_resources.items()
        if rid.startswith(group) and doc.get("type") == "Microsoft.Storage/storageAccounts"
    )
    return account


@contextmanager
def azure_under_test(patch: pytest.MonkeyPatch) -> Iterator[AzureUnderTest]:
    """The fake with every workspace and registry of the topology, all SDK traffic routed to
    it through `patch` (undone by whoever owns `patch`)."""
    import azure.core.pipeline.transport._requests_basic as requests_basic
    import azure.storage.blob._shared.base_client as storage_base

    credential = StaticTokenCredential()
    fake = FakeAzureML(credential)
    topology = load_topology()
    deploy_infra(fake, topology)
    for spec in topology.environments.values():
        fake.add_workspace(
            spec.subscription_id,
            spec.resource_group,
            spec.workspace,
            (spec.compute,),
            storage_account=_storage_account_of(fake, spec.subscription_id, spec.resource_group),
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
        fake.stop_scoring()


@contextmanager
def empty_fake(patch: pytest.MonkeyPatch) -> Iterator[tuple[FakeAzureML, StaticTokenCredential]]:
    """A fake Azure with nothing in it (no workspace, nothing deployed), the azure backend
    selected by name and every SDK client of the backend routed to it through `patch`."""
    credential = StaticTokenCredential()
    fake = FakeAzureML(credential)
    patch.setenv("MLOPS_BACKEND", "azure")
    patch.setattr(socket, "getaddrinfo", _loopback_only(socket.getaddrinfo))
    set_connection_factory(
        lambda: AzureConnection(
            credential=credential,
            transport=fake.transport(),
            retry=FAST_RETRIES,
            deadlines=FAST_DEADLINES,
        )
    )
    try:
        yield fake, credential
    finally:
        set_connection_factory(None)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """An MLflow-shaped folder (the SDK reads MLmodel's flavors when registering)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"
        "  sklearn:\n    sklearn_version: 1.9.1\n"
    )
    (folder / "model.skops").write_bytes(b"\x00fitted pipeline")
    return folder


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
