"""HTTP plumbing of the fake: the credential tests use, requests and replies as seen on the wire,
and the azure-core transport that answers from the fake instead of the network."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests
import urllib3
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from requests.structures import CaseInsensitiveDict

if TYPE_CHECKING:
    from tests.azure.fake_arm import FakeAzureML

ARM_HOST = "management.azure.com"
PROVIDER = "Microsoft.MachineLearningServices"
# api-versions azure-ai-ml 1.35.2 sends (seen) and the recordings used (1.32.0, and older for
# the registry/promote ones); anything else gets ARM's 400 InvalidApiVersionParameter
# (2022-05-01, 2022-10-01-preview and 2022-01-01-preview: the 2022 registry recordings)
API_VERSIONS = {
    "workspace": {"2024-10-01-preview", "2022-05-01", "2022-12-01-preview"},
    "datastore": {
        "2024-10-01-preview",
        "2024-07-01-preview",
        "2023-04-01-preview",
        "2022-05-01",
        "2022-10-01",
    },
    "data": {"2023-04-01-preview"},
    "model": {"2023-08-01-preview", "2022-05-01"},
    "code": {"2023-04-01", "2022-05-01"},
    "environment": {"2023-04-01-preview", "2022-05-01"},
    "component": {"2024-01-01-preview", "2022-05-01"},
    "compute": {"2023-08-01-preview", "2022-01-01-preview"},
    "job": {"2024-01-01-preview", "2022-10-01-preview"},
    "endpoint": {"2022-02-01-preview", "2023-04-01-preview"},
    "deployment": {"2023-04-01-preview", "2022-02-01-preview"},
    "operation": {
        "2022-02-01-preview",
        "2023-04-01-preview",
        "2022-05-01",
        "2023-06-01-preview",
        "2023-10-01",
        "2024-01-01-preview",
    },
    # the batch and schedule recordings (azure-ai-ml 1.6.0 and 1.10.0) and what 1.35.2 sends
    "batch_endpoint": {"2022-05-01", "2023-10-01", "2024-01-01-preview"},
    "batch_deployment": {"2022-05-01", "2023-10-01", "2024-01-01-preview"},
    "schedule": {"2023-06-01-preview"},
    "registry": {"2021-10-01-dataplanepreview"},
    # azure-mgmt-resource-deployments 2.0.0 (Resource Manager template deployments)
    "resource_deployment": {"2026-06-01"},
}
SAS_FIELDS = "sv=2021-10-04&se=2099-01-01T00%3A00%3A00Z&sr=c&sp=rcwl"  # what a service SAS carries
TERMINAL_JOB_STATUSES = {"Completed", "Failed", "Canceled", "NotResponding", "Paused"}


# --- the credential tests use ---------------------------------------------------------------


class StaticTokenCredential:
    """A TokenCredential that issues one opaque token per scope and remembers what it issued."""

    def __init__(self) -> None:
        self.issued: dict[str, str] = {}
        self.identity = uuid.uuid4().hex

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """An unsigned JWT whose audience is the scope's resource (the SDK reads `aud` before
        it submits a pipeline job)."""
        scope = " ".join(sorted(scopes))
        expires = int(datetime.now(UTC).timestamp()) + 3600
        if scope not in self.issued:
            claims = {
                "aud": scope.removesuffix("/.default"),
                "iss": "fake",
                "exp": expires,
                "jti": self.identity,  # tokens of two credentials never coincide
            }
            parts = [{"alg": "none", "typ": "JWT"}, claims]
            encoded = [base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=") for p in parts]
            signature = hashlib.sha256((scope + self.identity).encode()).hexdigest()[:16].encode()
            self.issued[scope] = b".".join([*encoded, signature]).decode()
        return AccessToken(self.issued[scope], expires)

    def close(self) -> None:
        pass


# --- requests and responses ------------------------------------------------------------------


@dataclass
class SeenRequest:
    """One request as the fake received it (headers and body included, for assertions)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    status: int = 0  # what the fake answered

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.url).path)

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.url).query).items()}

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int
    body: Any = None  # dict/list -> JSON; bytes -> as is; str -> text; None -> empty
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, bytes):
            data = self.body
        elif isinstance(self.body, str):
            data = self.body.encode()
        elif self.body is None:
            data = b""
        else:
            data = json.dumps(self.body).encode()
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        headers.setdefault("Content-Length", str(len(data)))
        headers.setdefault("Date", formatdate(usegmt=True))
        headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
        return data, headers


def arm_error(status: int, code: str, message: str, detail_code: str | None = None) -> Reply:
    """The error envelope the AML management front end sends (see the 404 in the recordings)."""
    details = [{"code": detail_code, "message": message, "details": [], "additionalInfo": []}]
    return Reply(
        status,
        {
            "error": {
                "code": code,
                "message": message if not detail_code else _generic_message(status),
                "details": details if detail_code else [],
                "additionalInfo": [{"type": "ComponentName", "info": {"value": "fake-mfe"}}],
            }
        },
    )


def _generic_message(status: int) -> str:
    return {
        404: "The specified resource was not found.",
        409: "The request conflicts with the current state of the resource.",
        400: "The request is invalid.",
    }.get(status, "The request failed.")


def _read_body(data: Any) -> bytes:
    if data is None:
        return b""
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str):
        return data.encode()
    if hasattr(data, "read"):
        return data.read()
    if isinstance(data, dict):
        return json.dumps(data).encode()
    return b"".join(chunk if isinstance(chunk, bytes) else chunk.encode() for chunk in data)


class _InMemorySession(requests.Session):
    """A requests session whose `request` asks the fake instead of the network."""

    def __init__(self, fake: FakeAzureML) -> None:
        super().__init__()
        self._fake = fake

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        headers = {k: str(v) for k, v in (kwargs.get("headers") or {}).items()}
        body = _read_body(kwargs.get("data"))
        if kwargs.get("files"):
            body += b"".join(
                _read_body(f[1] if isinstance(f, tuple) else f) for f in kwargs["files"].values()
            )
        seen = SeenRequest(method.upper(), url, headers, body)
        reply = self._fake.handle(seen)
        data, reply_headers = reply.encoded()
        response = requests.Response()
        response.status_code = reply.status
        response.headers = CaseInsensitiveDict(reply_headers)
        response.raw = urllib3.HTTPResponse(
            body=io.BytesIO(data),
            headers=reply_headers,
            status=reply.status,
            preload_content=False,
            decode_content=False,
            request_method=method.upper(),
        )
        response.url = url
        response.reason = "OK" if reply.status < 400 else "Error"
        response.request = requests.Request(method, url, headers=headers).prepare()
        return response


class FakeArmTransport(RequestsTransport):
    """An azure-core HttpTransport that answers from a FakeAzureML, never the network."""

    def __init__(self, fake: FakeAzureML, **kwargs: Any) -> None:
        super().__init__(session=_InMemorySession(fake), session_owner=False)

    def close(self) -> None:  # the session is shared by every client of one test
        pass
