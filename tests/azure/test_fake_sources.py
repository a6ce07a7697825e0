"""Every route of the Azure fake names what it follows, and the fake answers like it.

A route's source is a recording (`recording:<file>#<entries>`: the entries are requests that
route serves) or vendored REST API spec examples (`example:<file>`, several joined by ` + `);
a route no source shows says why. FAKE_SOURCES.md lists them all and is regenerated from the routes:

    .venv/bin/python -m tests.azure.test_fake_sources

The vendored Azure ML examples are replayed like the recordings (tests/azure/replay.py): the
resources an example assumes are created through the fake, the example's request is sent,
and the reply is compared with the example's response.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.azure.fake_arm import (
    FakeAzureML,
    Reply,
    RouteSource,
    SeenRequest,
    StaticTokenCredential,
)
from tests.azure.replay import compare
from tests.azure.test_recordings import recorded_fields, route_key

HERE = Path(__file__).parent
RECORDINGS = Path("/work/shared/azure-recordings")
EXAMPLES = HERE / "fixtures" / "rest-api-examples"
TABLE = HERE / "FAKE_SOURCES.md"
HOSTS = {"blob.core.windows.net": "blob", "inference.ml.azure.com": "inference"}


def _sources() -> list[RouteSource]:
    return FakeAzureML(StaticTokenCredential()).route_sources


def _cited(source: str) -> tuple[str, str, list[int]]:
    """`recording:<file>#1,4-6` -> ("recording", file, [1, 4, 5, 6])."""
    kind, _, rest = source.partition(":")
    name, _, entries = rest.partition("#")
    indexes: list[int] = []
    for part in filter(None, entries.split(",")):
        first, _, last = part.partition("-")
        indexes += range(int(first), int(last or first) + 1)
    return kind, name, indexes


def _examples(source: str | None) -> list[str]:
    """`example:a.json + b.json` -> ["a.json", "b.json"]; [] for anything else."""
    if not (source or "").startswith("example:"):
        return []
    return [name.strip() for name in (source or "").removeprefix("example:").split(" + ")]


def _path(pattern: str) -> str:
    """A route's regex as a readable path template."""
    text = re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", pattern)
    text = text.replace("\\", "").replace("resource[gG]roups", "resourceGroups")
    ws = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices"
    text = text.replace(ws + "/workspaces/{ws}", "{ws}")
    return text.replace(ws + "/registries/{reg}", "{reg}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(sources: list[RouteSource]) -> str:
    """FAKE_SOURCES.md: route -> source, then the routes no source shows, with why."""
    kinds: dict[str, int] = {}
    for s in sources:
        kind = s.source.split(":")[0] if s.source else "none"
        kinds[kind] = kinds.get(kind, 0) + 1
    lines = [
        "# What each route of the Azure fake follows",
        "",
        "Generated from `FakeAzureML.route_sources` by "
        "`.venv/bin/python -m tests.azure.test_fake_sources`; "
        "tests/azure/test_fake_sources.py checks it is up to date.",
        "",
        "`{ws}` = `/subscriptions/{sub}/resourceGroups/{rg}/providers/"
        "Microsoft.MachineLearningServices/workspaces/{ws}`, `{reg}` = the same with "
        "`registries/{reg}`. Recordings are in /work/shared/azure-recordings (`#` entry indexes); "
        "examples in tests/azure/fixtures/rest-api-examples. Handlers marked *(outside the "
        "route table)* are dispatched by host.",
        "",
        f"{len(sources)} routes and handlers: "
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
        "",
        "| Method | Route | Handler | Source |",
        "|---|---|---|---|",
    ]
    for s in sources:
        route = _path(s.pattern) if s.routed else f"{s.pattern} *(outside the route table)*"
        source = f"`{s.source}`" if s.source else "none (below)"
        lines.append(f"| {s.method} | `{_cell(route)}` | `{s.handler}` | {_cell(source)} |")
    lines += ["", "## Routes no recording or example shows", ""]
    for s in sources:
        if not s.source:
            route = _path(s.pattern) if s.routed else s.pattern
            lines.append(f"- {s.method} `{route}` (`{s.handler}`): {s.why}")
    return "\n".join(lines) + "\n"


# --- the registry ---------------------------------------------------------------------------


def test_every_route_names_its_source_or_says_why() -> None:
    fake = FakeAzureML(StaticTokenCredential())
    routed = [s for s in fake.route_sources if s.routed]
    assert len(routed) == len(fake.routes)
    assert {s.pattern for s in fake.route_sources if not s.routed} >= {
        "https://{account}.blob.core.windows.net/{container}/{blob}",
        "https://{endpoint}.{region}.inference.ml.azure.com/score",
    }
    unexplained = [f"{s.method} {s.pattern}" for s in fake.route_sources if not (s.source or s.why)]
    assert not unexplained
    for s in fake.route_sources:
        assert s.source is None or re.fullmatch(
            r"(recording:[^#]+#[\d,-]+|example:[^ ]+( \+ [^ ]+)*)", s.source
        ), f"{s.method} {s.pattern}: {s.source!r}"


def test_cited_recording_entries_are_requests_the_route_serves() -> None:
    if not RECORDINGS.exists():
        pytest.skip(f"recordings not available at {RECORDINGS}")
    wrong = []
    for s in _sources():
        if not (s.source or "").startswith("recording:"):
            continue
        _, name, indexes = _cited(s.source or "")
        path = RECORDINGS / name
        assert path.exists(), f"{s.method} {s.pattern}: no recording {name}"
        entries = json.loads(path.read_text(encoding="utf-8"))["Entries"]
        for index in indexes:
            entry = entries[index]
            url = urlsplit(entry["RequestUri"])
            if s.routed:
                served = re.fullmatch(s.pattern, url.path) is not None
            else:
                host = next((h for h in HOSTS if h in s.pattern), "")
                served = bool(host) and (url.hostname or "").endswith(host)
            if entry["RequestMethod"] != s.method or not served:
                wrong.append(
                    f"{s.method} {s.pattern}: {name}#{index} is {entry['RequestMethod']} {url.path}"
                )
    assert not wrong, "\n".join(wrong)


def test_every_vendored_example_is_indexed_and_cited() -> None:
    index = json.loads((EXAMPLES / "index.json").read_text(encoding="utf-8"))["files"]
    on_disk = {p.name for p in EXAMPLES.glob("*.json")} - {"index.json"}
    assert on_disk == set(index)
    cited = {name for s in _sources() for name in _examples(s.source)}
    assert cited <= on_disk, cited - on_disk
    assert on_disk <= cited, f"vendored but cited by no route: {sorted(on_disk - cited)}"


def test_fake_sources_table_is_up_to_date() -> None:
    assert TABLE.read_text(encoding="utf-8") == render(_sources()), (
        "regenerate: .venv/bin/python -m tests.azure.test_fake_sources"
    )


# --- the vendored Azure ML examples, replayed -------------------------------------------------


@dataclass
class ExampleCase:
    method: str
    path: str  # formatted with the example's parameters
    api_version: str  # the one azure-ai-ml 1.35.2 sends (the fake answers the SDK's versions)
    seed: Callable[[FakeAzureML, dict[str, Any], Callable[..., Reply]], None]
    allowed: set[str]


WS_PATH = (
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/"
    "Microsoft.MachineLearningServices/workspaces/{workspaceName}"
)


def _workspace(fake: FakeAzureML, params: dict[str, Any], send: Callable[..., Reply]) -> None:
    fake.add_workspace(
        params["subscriptionId"],
        params["resourceGroupName"],
        params["workspaceName"],
        datastore_credentials="AccountKey",
    )


def _example_body(name: str) -> dict[str, Any]:
    example = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    body = example["responses"]["200"]["body"]
    return body["value"][0] if "value" in body else body


def _with_data(fake: FakeAzureML, params: dict[str, Any], send: Callable[..., Reply]) -> None:
    _workspace(fake, params, send)
    sent = _example_body(
        "machinelearningservices.stable.2024-04-01.Workspace.DataVersionBase.list.json"
    )
    reply = send(
        "PUT",
        WS_PATH + "/data/{name}/versions/1",
        "2023-04-01-preview",
        {"properties": sent["properties"]},
    )
    assert reply.status in (200, 201), reply.body


def _with_environment(
    fake: FakeAzureML, params: dict[str, Any], send: Callable[..., Reply]
) -> None:
    _workspace(fake, params, send)
    sent = _example_body(
        "machinelearningservices.stable.2024-04-01.Workspace.EnvironmentVersion.get.json"
    )
    reply = send(
        "PUT",
        WS_PATH + "/environments/{name}/versions/{version}",
        "2023-04-01-preview",
        {"properties": sent["properties"]},
    )
    assert reply.status in (200, 201), reply.body


def _with_endpoint(fake: FakeAzureML, params: dict[str, Any], send: Callable[..., Reply]) -> None:
    _workspace(fake, params, send)
    fake.lro_polls = 0
    reply = send(
        "PUT",
        WS_PATH + "/onlineEndpoints/testEndpoint",
        "2023-04-01-preview",
        {"location": fake.location, "properties": {"authMode": "Key"}},
    )
    assert reply.status in (200, 201), reply.body


def _with_deployment(fake: FakeAzureML, params: dict[str, Any], send: Callable[..., Reply]) -> None:
    """An endpoint made through the fake and a deployment it holds (a deployment PUT needs a
    model, code and environment; what getLogs and delete read is the deployment's record)."""
    _with_endpoint(fake, params, send)
    ws = fake.workspace(params["workspaceName"])
    endpoint, name = params["endpointName"], params["deploymentName"]
    ws.deployments.setdefault(endpoint, {})[name] = {
        "id": f"{ws.arm_id}/onlineEndpoints/{endpoint}/deployments/{name}",
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
        "properties": {"provisioningState": "Succeeded", "endpointComputeType": "Managed"},
    }


ML = "machinelearningservices.stable."
# the examples' lists have a next page; a last page has no nextLink (ARM's paging), nor has
# any recorded list (test_crud_file #7, test_online_deployment_create #96)
NEXT_LINK = "0: $.nextLink"
EXAMPLE_CASES = {
    ML + "2024-04-01.Datastore.list.json": ExampleCase(
        "GET",
        WS_PATH + "/datastores",
        "2024-07-01-preview",
        _workspace,
        # the fake never hands out account keys: the recorded datastore GETs (test_create_uri_file
        # #0) have no `secrets` either, only listSecrets answers them
        {"0: $.value[0].properties.credentials.secrets", NEXT_LINK},
    ),
    ML + "2024-04-01.Workspace.DataVersionBase.list.json": ExampleCase(
        "GET", WS_PATH + "/data/{name}/versions", "2023-04-01-preview", _with_data, {NEXT_LINK}
    ),
    ML + "2024-04-01.Workspace.EnvironmentVersion.list.json": ExampleCase(
        "GET",
        WS_PATH + "/environments/{name}/versions",
        "2023-04-01-preview",
        _with_environment,
        {NEXT_LINK},
    ),
    ML + "2024-04-01.Workspace.EnvironmentVersion.get.json": ExampleCase(
        "GET",
        WS_PATH + "/environments/{name}/versions/{version}",
        "2023-04-01-preview",
        _with_environment,
        set(),
    ),
    ML + "2024-04-01.Workspace.CodeVersion.createOrGetStartPendingUpload.json": ExampleCase(
        "POST",
        WS_PATH + "/codes/{name}/versions/{version}/startPendingUpload",
        "2023-04-01",
        _workspace,
        set(),
    ),
    ML + "2024-04-01.Workspace.OnlineEndpoint.list.json": ExampleCase(
        "GET",
        WS_PATH + "/onlineEndpoints",
        "2023-04-01-preview",
        _with_endpoint,
        # the example's endpoint has a user-assigned identity and a sku; one made with neither
        # (as the recorded endpoint PUTs, test_online_endpoint_e2e #1) answers without them
        {NEXT_LINK, "0: $.value[0].identity.userAssignedIdentities", "0: $.value[0].sku"},
    ),
    ML + "2023-04-01.OnlineDeployment.getLogs.json": ExampleCase(
        "POST",
        WS_PATH + "/onlineEndpoints/{endpointName}/deployments/{deploymentName}/getLogs",
        "2023-04-01-preview",
        _with_deployment,
        set(),
    ),
    ML + "2023-04-01.OnlineDeployment.delete.json": ExampleCase(
        "DELETE",
        WS_PATH + "/onlineEndpoints/{endpointName}/deployments/{deploymentName}",
        "2023-04-01-preview",
        _with_deployment,
        # the example's 202 lists no headers; the recorded endpoint DELETE's 202
        # (test_online_endpoint_e2e #10) has these, and the SDK's poller follows them
        {
            "0: header azure-asyncoperation",
            "0: header location",
            "0: header x-ms-async-operation-timeout",
        },
    ),
}


@pytest.mark.parametrize("name", sorted(EXAMPLE_CASES), ids=lambda n: n.split(".", 3)[3][:-5])
def test_fake_answers_spec_examples_like_azure(name: str) -> None:
    case = EXAMPLE_CASES[name]
    example = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    params = {"version": "1", **example["parameters"]}
    credential = StaticTokenCredential()
    fake = FakeAzureML(credential)
    token = credential.get_token("https://management.azure.com/.default").token

    def send(method: str, path: str, api_version: str, body: Any = None) -> Reply:
        url = f"https://management.azure.com{path.format(**params)}?api-version={api_version}"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else b""
        return fake.handle(SeenRequest(method, url, headers, data))

    case.seed(fake, params, send)
    reply = send(case.method, case.path, case.api_version, params.get("body"))
    statuses = tuple(int(code) for code in example["responses"])
    response = example["responses"].get(str(reply.status), {})
    problems = compare(
        0,
        case.method,
        statuses,
        response.get("headers") or {},
        response.get("body"),
        reply,
        case.allowed,
        values=False,
        route=route_key(fake, case.method, f"https://management.azure.com{case.path}"),
        known=recorded_fields() if RECORDINGS.exists() else {},
    )
    assert not fake.unhandled
    assert not problems, "\n".join(problems)


if __name__ == "__main__":
    TABLE.write_text(render(_sources()), encoding="utf-8")
    sys.stdout.write(f"wrote {TABLE}\n")
