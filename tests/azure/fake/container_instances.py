"""Azure Container Instances as prefect-azure's worker uses it: a container group declared in a
resource-group deployment starts its container; `container_groups.get` shows it Running, then
Terminated with its exit code; `containers.list_logs` returns its output; `begin_delete`
removes the group and kills what still runs. The container's identity endpoint (IMDS) issues
tokens of the group's user-assigned identity.

What runs: the image must be one the test registered as built from this checkout
(`images[image_uri]`: working directory and the image's environment; the Dockerfile's image,
which cannot be built here), pulled only with a managed identity that is assigned to the group
and holds AcrPull on the registry (Azure's InaccessibleImage otherwise; never a password).
The container's `command` runs as a local process in its own session with exactly the
environmentVariables the worker set plus the host plumbing: PYTHONPATH with
tests/azure/aci_host (the container's network, see its sitecustomize), MLOPS_FAKE_ACI_FRONT (the
loopback front, fake/network.py) and AZURE_POD_IDENTITY_AUTHORITY_HOST (this group's IMDS path
on the front, where azure-identity's managed identity credential asks for tokens), and a HOME
of its own (a container's file system is not the host's).

Sources: the containerinstance examples of Azure/azure-rest-api-specs (vendored), the IMDS
token response of "How to use managed identities for Azure resources on an Azure VM to acquire
an access token" (learn.microsoft.com/entra/identity/managed-identities-azure-resources/
how-to-use-vm-token), Azure's InaccessibleImage error ("Troubleshoot common issues in Azure
Container Instances"). Not reproduced: restart policies other than Never, several containers
per group, volumes, ports, stop/start/restart.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.azure.fake.arm_templates import TemplateError
from tests.azure.fake.http import Reply, SeenRequest
from tests.azure.fake.network import ContainerNetwork

CONTAINER_GROUPS = "Microsoft.ContainerInstance/containerGroups"
GROUP = (
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.ContainerInstance/containerGroups/(?P<name>[^/]+)"
)
IMDS = r"/aci-imds/(?P<key>[^/]+)/metadata/identity/oauth2/token"
IMDS_DOC = (
    "learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token "
    "(Get a token using HTTP: the sample response)"
)
ACI_API_VERSIONS = {"2023-05-01"}  # azure-mgmt-containerinstance 10.1.0
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"  # the built-in AcrPull role
ACI_HOST = Path(__file__).resolve().parents[1] / "aci_host"
EXAMPLE = "example:containerinstance.stable."


@dataclass(frozen=True)
class Image:
    """An image "built" from a checkout: where its files are and its ENV lines."""

    workdir: Path
    env: dict[str, str]


@dataclass
class RunningContainer:
    group_id: str
    process: subprocess.Popen[bytes]
    home: Path
    started: str
    lines: list[tuple[str, str]] = field(default_factory=list)  # (timestamp, line)
    finished: str | None = None
    reader: threading.Thread | None = None

    def wait(self, timeout: float) -> int:
        """The exit code, once the process ended and all its output was read."""
        code = self.process.wait(timeout)
        if self.reader is not None:
            self.reader.join(timeout)
        return code

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _inaccessible(image: str, group: str, why: str) -> TemplateError:
    return TemplateError(
        "InaccessibleImage",
        f"The image '{image}' in container group '{group}' is not accessible. Please check the "
        f"image and registry credential. ({why})",
    )


class ContainerInstanceApi:
    """Mixed into FakeAzureML, which holds the state and routes requests here."""

    def add_container_instance_routes(self) -> None:
        self.images: dict[str, Image] = {}
        self.running: dict[str, RunningContainer] = {}  # group ID (lower-cased) -> container
        self.container_runs: list[RunningContainer] = []  # every container started, in order
        self.imds_identities: dict[str, list[str]] = {}  # IMDS key -> identity resource IDs
        self._network: ContainerNetwork | None = None
        r = self._route
        r("GET", GROUP, EXAMPLE + "2020-10-10.ContainerGroupsGet_Succeeded.json")(
            self._get_container_group
        )
        r("DELETE", GROUP, EXAMPLE + "2022-09-01.ContainerGroupsDelete.json")(
            self._delete_container_group
        )
        r(
            "GET",
            GROUP + r"/containers/(?P<container>[^/]+)/logs",
            EXAMPLE + "2019-01-01.ContainerListLogs.json",
        )(self._container_logs)
        r(
            "GET",
            IMDS,
            why="a managed identity's token from the container's identity endpoint, in the "
            f"shape Azure documents for IMDS ({IMDS_DOC}); no REST API example or recording "
            "covers IMDS; the path is per container group (AZURE_POD_IDENTITY_AUTHORITY_HOST)",
        )(self._imds_token)

    # --- the host: network and identity endpoints --------------------------------------------

    def container_network(self) -> ContainerNetwork:
        if self._network is None:
            self._network = ContainerNetwork(self)
        return self._network

    def identity_endpoint(self, identities: list[str]) -> str:
        """An IMDS authority (for AZURE_POD_IDENTITY_AUTHORITY_HOST) that issues tokens of
        these managed identities: what a container group, or a worker's host, has."""
        key = uuid.uuid4().hex
        self.imds_identities[key] = list(identities)
        return f"{self.container_network().url}/aci-imds/{key}"

    def stop_container_groups(self) -> None:
        for running in list(self.running.values()):
            _kill(running.process)
        self.running.clear()
        for run in self.container_runs:
            shutil.rmtree(run.home, ignore_errors=True)
        if self._network is not None:
            self._network.stop()
            self._network = None

    # --- provisioning (called by the template engine's resource hook) -------------------------

    def start_container_group(self, document: dict[str, Any]) -> None:
        properties = document.get("properties") or {}
        containers = properties.get("containers") or []
        if len(containers) != 1:
            raise TemplateError("InvalidContainerGroup", "the fake runs one container per group")
        container = containers[0]["properties"]
        image_uri = container["image"]
        image = self._pull(document, image_uri)
        env = {  # the image's ENV, overridden by the group's variables (as ACI does)
            **image.env,
            **{
                var["name"]: var.get("value", var.get("secureValue", ""))
                for var in container.get("environmentVariables") or []
            },
        }
        assigned = list(((document.get("identity") or {}).get("userAssignedIdentities")) or {})
        home = Path(tempfile.mkdtemp(prefix=f"aci-{document['name'][:40]}-"))
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(
                    [str(ACI_HOST), *filter(None, [image.env.get("PYTHONPATH")])]
                ),
                "HOME": str(home),
                "MLOPS_FAKE_ACI_FRONT": self.container_network().url,
                "AZURE_POD_IDENTITY_AUTHORITY_HOST": self.identity_endpoint(assigned),
            }
        )
        command = container.get("command") or []
        if not command:
            raise TemplateError("InvalidContainerGroup", "the fake needs the container's command")
        process = subprocess.Popen(
            command,
            cwd=image.workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        running = RunningContainer(document["id"], process, home, _now())
        running.reader = threading.Thread(target=_read_output, args=(running,), daemon=True)
        running.reader.start()
        self.running[document["id"].lower()] = running
        self.container_runs.append(running)
        properties["provisioningState"] = "Succeeded"
        properties.setdefault("instanceView", {"state": "Running", "events": []})

    def _pull(self, document: dict[str, Any], image_uri: str) -> Image:
        group = document["name"]
        image = self.images.get(image_uri)
        if image is None:
            raise _inaccessible(image_uri, group, "no such image in the registry")
        server = image_uri.split("/", 1)[0]
        if not server.endswith(".azurecr.io"):
            return image
        credentials = [
            c
            for c in document["properties"].get("imageRegistryCredentials") or []
            if c.get("server") == server
        ]
        if not credentials:
            raise _inaccessible(image_uri, group, f"no imageRegistryCredentials for {server}")
        credential = credentials[0]
        if credential.get("password") or credential.get("username"):
            raise _inaccessible(image_uri, group, "the fake pulls with a managed identity only")
        identity = (credential.get("identity") or "").lower()
        assigned = {
            i.lower()
            for i in ((document.get("identity") or {}).get("userAssignedIdentities") or {})
        }
        if identity not in assigned:
            raise _inaccessible(image_uri, group, f"{identity} is not assigned to the group")
        if not self._holds_acr_pull(identity, server.split(".", 1)[0]):
            raise _inaccessible(image_uri, group, f"{identity} holds no AcrPull on {server}")
        return image

    def _holds_acr_pull(self, identity: str, registry_name: str) -> bool:
        found = self.arm_resources.get(identity.lower())
        principal = ((found or {}).get("properties") or {}).get("principalId")
        registries = [
            rid
            for rid, doc in self.arm_resources.items()
            if doc.get("type") == "Microsoft.ContainerRegistry/registries"
            and doc.get("name", "").lower() == registry_name.lower()
        ]
        if principal is None or not registries:
            return False
        for rid, doc in self.arm_resources.items():
            if doc.get("type") != "Microsoft.Authorization/roleAssignments":
                continue
            props = doc.get("properties") or {}
            scope = rid.split("/providers/microsoft.authorization/roleassignments/")[0]
            if (
                props.get("principalId") == principal
                and str(props.get("roleDefinitionId", "")).lower().endswith(ACR_PULL)
                and registries[0].startswith(scope)
            ):
                return True
        return False

    # --- the container group -----------------------------------------------------------------

    def _group(self, request: SeenRequest, sub: str, rg: str, name: str) -> dict | Reply:
        if request.query.get("api-version") not in ACI_API_VERSIONS:
            return Reply(
                400,
                {
                    "error": {
                        "code": "InvalidApiVersionParameter",
                        "message": f"The api-version '{request.query.get('api-version')}' is "
                        f"invalid. Supported: {sorted(ACI_API_VERSIONS)}",
                    }
                },
            )
        group_id = (
            f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{CONTAINER_GROUPS}/{name}".lower()
        )
        document = self.arm_resources.get(group_id)
        if document is None:
            return Reply(
                404,
                {
                    "error": {
                        "code": "ResourceNotFound",
                        "message": f"The Resource '{CONTAINER_GROUPS}/{name}' under resource "
                        f"group '{rg}' was not found. For more details please go to "
                        "https://aka.ms/ARMResourceNotFoundFix",
                    }
                },
            )
        return document

    def _group_view(self, document: dict[str, Any]) -> dict[str, Any]:
        """The group as ACI shows it: the container's instanceView follows its process."""
        view = copy.deepcopy(document)
        running = self.running.get(document["id"].lower())
        container = view["properties"]["containers"][0]
        for var in container["properties"].get("environmentVariables") or []:
            if "secureValue" in var:
                var.pop("secureValue")  # ACI never returns secure values
        if running is None:
            return view
        exit_code = running.process.poll()
        if exit_code is None:
            state = {"state": "Running", "startTime": running.started, "detailStatus": ""}
            group_state = "Running"
        else:
            running.finished = running.finished or _now()
            state = {
                "state": "Terminated",
                "startTime": running.started,
                "exitCode": exit_code,
                "finishTime": running.finished,
                "detailStatus": "Completed",
            }
            group_state = "Succeeded" if exit_code == 0 else "Failed"
        container["properties"]["instanceView"] = {
            "restartCount": 0,
            "currentState": state,
            "events": [],
        }
        view["properties"]["instanceView"] = {"state": group_state, "events": []}
        return view

    def _get_container_group(self, request: SeenRequest, sub: str, rg: str, name: str) -> Reply:
        found = self._group(request, sub, rg, name)
        if isinstance(found, Reply):
            return found
        return Reply(200, self._group_view(found))

    def _delete_container_group(self, request: SeenRequest, sub: str, rg: str, name: str) -> Reply:
        found = self._group(request, sub, rg, name)
        if isinstance(found, Reply):
            return Reply(204) if found.status == 404 else found
        view = self._group_view(found)
        running = self.running.pop(found["id"].lower(), None)
        if running is not None:
            _kill(running.process)
            shutil.rmtree(running.home, ignore_errors=True)  # the container's file system
        del self.arm_resources[found["id"].lower()]
        return Reply(200, view)

    def _container_logs(
        self, request: SeenRequest, sub: str, rg: str, name: str, container: str
    ) -> Reply:
        found = self._group(request, sub, rg, name)
        if isinstance(found, Reply):
            return found
        running = self.running.get(found["id"].lower())
        lines = list(running.lines) if running else []
        tail = request.query.get("tail")
        if tail:
            lines = lines[-int(tail) :]
        stamped = request.query.get("timestamps", "").lower() == "true"
        content = "\n".join(f"{t} {line}" if stamped else line for t, line in lines)
        return Reply(200, {"content": content})

    # --- the identity endpoint ------------------------------------------------------------------

    def _imds_token(self, request: SeenRequest, key: str) -> Reply:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if headers.get("metadata") != "true":
            return Reply(
                400,
                {
                    "error": "invalid_request",
                    "error_description": "Required metadata header not specified",
                },
            )
        identities = self.imds_identities.get(key, [])
        query = request.query
        chosen = [
            i
            for i in identities
            if self._identity_matches(i, query.get("client_id"), query.get("msi_res_id"))
        ]
        if len(chosen) != 1:
            return Reply(
                400,
                {
                    "error": "invalid_request",
                    "error_description": "Identity not found"
                    if not chosen
                    else "Multiple user assigned identities exist, please specify the clientId "
                    "/ resourceId of the identity in the token request",
                },
            )
        identity = chosen[0]
        properties = self.arm_resources[identity.lower()].get("properties") or {}
        resource = query.get("resource", "")
        now = int(time.time())
        claims = {
            "aud": resource,
            "iss": "fake-imds",
            "exp": now + 3600,
            "oid": properties.get("principalId"),
            "appid": properties.get("clientId"),
            "xms_mirid": identity,
            "jti": uuid.uuid4().hex,
        }
        parts = [{"alg": "none", "typ": "JWT"}, claims]
        encoded = [base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=") for p in parts]
        token = b".".join([*encoded, uuid.uuid4().hex.encode()]).decode()
        self.identity_tokens[token] = identity
        return Reply(
            200,
            {
                "access_token": token,
                "client_id": properties.get("clientId"),
                "expires_in": "3599",
                "expires_on": str(now + 3599),
                "ext_expires_in": "3599",
                "not_before": str(now),
                "resource": resource,
                "token_type": "Bearer",
            },
        )

    def _identity_matches(self, identity: str, client_id: str | None, res_id: str | None) -> bool:
        if res_id:
            return identity.lower() == res_id.lower()
        if client_id:
            found = self.arm_resources.get(identity.lower()) or {}
            return (found.get("properties") or {}).get("clientId") == client_id
        return True


def _read_output(running: RunningContainer) -> None:
    assert running.process.stdout is not None
    for raw in running.process.stdout:
        running.lines.append((_now(), raw.decode(errors="replace").rstrip("\n")))


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the container's session (its process and children), as deleting a group does."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
