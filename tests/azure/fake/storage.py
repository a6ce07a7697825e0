"""Azure Blob Storage as the storage SDK speaks it: put/get/head, blocks, append blobs,
metadata, listing, conditional creates, and containers under a time-based immutability (WORM)
policy.

Containers and their policies come from Resource Manager: when the template engine deploys a
`Microsoft.Storage/storageAccounts/blobServices/containers` resource the container exists, and a
`.../containers/immutabilityPolicies` resource puts it under the policy (`_provisioned`, ahead
of DeploymentApi's in FakeAzureML's bases).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from tests.azure.fake.http import (
    Reply,
    SeenRequest,
)
from tests.azure.fake.state import (
    DATA_RECORDING,
    MODEL_REGISTRY_RECORDING,
    Blob,
    RouteSource,
)

BLOB = "https://{account}.blob.core.windows.net/{container}"
ROLE_ASSIGNMENTS = "/providers/Microsoft.Authorization/roleAssignments/"
# built-in role IDs (learn.microsoft.com, "Azure built-in roles for Storage")
BLOB_DATA_WRITERS = {
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe",  # Storage Blob Data Contributor
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner
}
BLOB_DATA_READERS = BLOB_DATA_WRITERS | {"2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"}  # + Reader
APPEND_RECORDING = (
    "Azure/azure-sdk-assets python/sdk/storage/azure-storage-blob/tests/recordings/"
    "test_append_blob.pyTestStorageAppendBlobtest_append_block_bytes.json (commit 7c0818e3)"
)
ERROR_CODES_DOC = "learn.microsoft.com/rest/api/storageservices/blob-service-error-codes"
CONTAINERS = "Microsoft.Storage/storageAccounts/blobServices/containers"
IMMUTABILITY_POLICIES = CONTAINERS + "/immutabilityPolicies"


@dataclass
class AppendBlob(Blob):
    """A blob whose content only grows, one committed block at a time."""

    blocks: int = 0


@dataclass(frozen=True)
class ImmutabilityPolicy:
    """A container's time-based retention (WORM) policy, as Resource Manager deployed it."""

    days: int
    allow_protected_append_writes: bool

    def protects(self, blob: Blob) -> bool:
        """Whether the retention period, counted from the blob's creation, still runs."""
        created = parsedate_to_datetime(blob.created)
        return datetime.now(UTC) < created + timedelta(days=self.days)


# what each blob operation follows (dispatched by host, outside FakeAzureML's route table)
BLOB_SOURCES = (
    RouteSource("HEAD", BLOB + "/{blob}", "_blob", DATA_RECORDING + "#2,3", routed=False),
    RouteSource("PUT", BLOB + "/{blob}", "_blob", MODEL_REGISTRY_RECORDING + "#4-8", routed=False),
    RouteSource(
        "PUT",
        BLOB + "/{blob}?comp=metadata",
        "_blob",
        MODEL_REGISTRY_RECORDING + "#9",
        routed=False,
    ),
    RouteSource(
        "GET",
        BLOB + "?restype=container&comp=list",
        "_blob",
        MODEL_REGISTRY_RECORDING + "#18,19",
        routed=False,
    ),
    RouteSource(
        "GET",
        BLOB + "/{blob} (x-ms-range)",
        "_blob",
        MODEL_REGISTRY_RECORDING + "#20-24",
        routed=False,
    ),
    RouteSource(
        "PUT",
        BLOB + "/{blob}?comp=block, ?comp=blocklist",
        "_blob",
        None,
        "stages blocks and commits the listed ones as the blob (201); the recorded uploads are "
        "single PUTs below the storage SDK's block size, so no recording shows a block upload",
        routed=False,
    ),
    RouteSource(
        "PUT",
        BLOB + "/{blob}?comp=properties, ?comp=tier",
        "_blob",
        None,
        "answers 200 and keeps nothing; no recording sets blob properties or a tier",
        routed=False,
    ),
    RouteSource(
        "GET",
        BLOB + "?restype=container",
        "_blob",
        None,
        "container properties (200 with ETag, Last-Modified); no recording reads them",
        routed=False,
    ),
    RouteSource(
        "DELETE",
        BLOB + "/{blob}",
        "_blob",
        None,
        "removes the blob (202); no recording deletes a blob",
        routed=False,
    ),
    RouteSource(
        "PUT",
        BLOB + "/{blob} (x-ms-blob-type: AppendBlob)",
        "_blob",
        None,
        "creates an empty append blob (201, ETag, Last-Modified, x-ms-request-server-encrypted) "
        f"as {APPEND_RECORDING} #2 answers; that SDK recording is not among "
        "/work/shared/azure-recordings, so it is cited here",
        routed=False,
    ),
    RouteSource(
        "PUT",
        BLOB + "/{blob}?comp=appendblock",
        "_blob",
        None,
        "commits the body as one block at the end (201 with x-ms-blob-append-offset, "
        f"x-ms-blob-committed-block-count) as {APPEND_RECORDING} #3-6 answer; a missing blob is "
        "404 BlobNotFound, a block blob 409 InvalidBlobType (Blob service error codes, "
        f"{ERROR_CODES_DOC}); a download of an append blob carries x-ms-blob-type AppendBlob "
        "and the block count (#7)",
        routed=False,
    ),
    RouteSource(
        "PUT",
        BLOB + "/{blob} (If-None-Match: *)",
        "_blob",
        None,
        "a create of a blob that exists is refused 409 BlobAlreadyExists ('The specified blob "
        f"already exists.', {ERROR_CODES_DOC}), as az storage blob upload without --overwrite "
        "(which sends If-None-Match: *) shows in Azure/azure-cli issue 25019; no recording "
        "sends the header",
        routed=False,
    ),
    RouteSource(
        "PUT, DELETE",
        BLOB + "/{blob} in a container under an immutability policy",
        "_blob",
        None,
        "while the policy's immutabilityPeriodSinceCreationInDays runs from the blob's creation, "
        "overwriting it (Put Blob, Put Block List), setting its metadata and deleting it are "
        "refused 409 BlobImmutableDueToPolicy ('This operation is not permitted as the blob is "
        f"immutable due to a policy.', {ERROR_CODES_DOC}); Append Block is allowed only with "
        "allowProtectedAppendWrites ('new blocks can be written to an append blob ... any "
        "existing blocks cannot be modified or deleted': ImmutabilityPolicyProperty in "
        "Azure/azure-rest-api-specs specification/storage/resource-manager/Microsoft.Storage/"
        "stable/2025-01-01/blob.json). No recording or example shows a refused write",
        routed=False,
    ),
)


class BlobApi:
    """Mixed into FakeAzureML, which holds the state and routes requests here."""

    # --- blob storage ----------------------------------------------------------------------

    def _blob(self, request: SeenRequest) -> Reply:
        account = request.host.split(".")[0]
        parts = request.path.lstrip("/").split("/", 1)
        container = parts[0]
        name = parts[1] if len(parts) > 1 else ""
        query = request.query
        headers = {k.lower(): v for k, v in request.headers.items()}
        sas = query.get("sig")
        bearer = headers.get("authorization", "")
        if sas is not None:
            if sas not in self.issued_sas:
                return self._blob_error(403, "AuthenticationFailed")
        elif not self.accepts_token(bearer):
            return self._blob_error(401, "NoAuthenticationInformation")
        elif not self._holds_blob_data_role(bearer, account, container, request.method):
            return self._blob_error(403, "AuthorizationPermissionMismatch")
        fault = self._blob_fault(request, container, name)
        if fault is not None:
            return fault
        blobs = self.blobs.get((account, container))
        if blobs is None:
            return self._blob_error(404, "ContainerNotFound")
        common = {"x-ms-version": headers.get("x-ms-version", "2025-01-05")}
        if query.get("restype") == "container":
            if query.get("comp") == "list":
                return Reply(
                    200,
                    self._list_blobs(account, container, blobs, query),
                    common | {"Content-Type": "application/xml"},
                )
            return Reply(
                200, None, common | {"ETag": '"0x1"', "Last-Modified": formatdate(usegmt=True)}
            )
        meta_headers = {
            k[len("x-ms-meta-") :]: v for k, v in headers.items() if k.startswith("x-ms-meta-")
        }
        existing = blobs.get(name)
        policy = self.immutability_policies.get((account, container))
        if request.method == "PUT":
            comp = query.get("comp")
            if comp == "metadata":
                if existing is None:
                    return self._blob_error(404, "BlobNotFound")
                if refused := self._worm_refusal(policy, existing):
                    return refused
                existing.metadata = meta_headers
                return Reply(200, None, common | {"ETag": existing.etag})
            if comp == "block":
                self._staged.setdefault((account, container, name), {})[query["blockid"]] = (
                    request.body
                )
                return Reply(201, None, common)
            if comp == "appendblock":
                return self._append_block(existing, policy, request.body, common)
            if comp in ("properties", "tier"):
                return Reply(200, None, common)
            if comp not in (None, "blocklist"):  # lease, seal, snapshot, ...: not modelled
                return self._blob_error(400, "FakeUnsupported")
            if existing is not None and headers.get("if-none-match") == "*":
                return self._blob_error(409, "BlobAlreadyExists")
            if existing is not None and (refused := self._worm_refusal(policy, existing)):
                return refused
            if comp == "blocklist":
                staged = self._staged.pop((account, container, name), {})
                ids = re.findall(
                    r"<(?:Latest|Committed|Uncommitted)>([^<]+)<", request.body.decode()
                )
                blobs[name] = Blob(b"".join(staged[i] for i in ids), meta_headers)
                return Reply(201, None, common | {"ETag": blobs[name].etag})
            if headers.get("x-ms-blob-type") == "AppendBlob":
                blobs[name] = AppendBlob(b"", meta_headers)
            else:
                blobs[name] = Blob(request.body, meta_headers)
            md5 = base64.b64encode(hashlib.md5(request.body).digest()).decode()
            return Reply(
                201,
                None,
                common
                | {
                    "ETag": blobs[name].etag,
                    "Last-Modified": blobs[name].created,
                    "Content-MD5": md5,
                    "x-ms-request-server-encrypted": "true",
                },
            )
        blob = existing
        if blob is None:
            return self._blob_error(404, "BlobNotFound", head=request.method == "HEAD")
        props = common | {
            "Content-Type": "application/octet-stream",
            "ETag": blob.etag,
            "Last-Modified": blob.created,
            "x-ms-creation-time": blob.created,
            "x-ms-blob-type": _blob_type(blob),
            "Accept-Ranges": "bytes",
            **{f"x-ms-meta-{k}": v for k, v in blob.metadata.items()},
        }
        if isinstance(blob, AppendBlob):
            props["x-ms-blob-committed-block-count"] = str(blob.blocks)
        if request.method == "HEAD":
            return Reply(200, None, props | {"Content-Length": str(len(blob.data))})
        # a download answers without the x-ms-meta-* headers the HEAD has (the recorded GETs,
        # test_create_get_download_model_registry #20-24, of blobs #9 had set metadata on)
        props = {k: v for k, v in props.items() if not k.startswith("x-ms-meta-")}
        if request.method == "DELETE":
            if refused := self._worm_refusal(policy, blob):
                return refused
            del blobs[name]
            return Reply(202, None, common)
        wanted = headers.get("x-ms-range") or headers.get("range")
        if wanted:
            start_text, _, end_text = wanted.removeprefix("bytes=").partition("-")
            start = int(start_text)
            end = min(int(end_text) if end_text else len(blob.data) - 1, len(blob.data) - 1)
            if start >= len(blob.data) and blob.data:
                return self._blob_error(416, "InvalidRange")
            chunk = blob.data[start : end + 1]
            return Reply(
                206, chunk, props | {"Content-Range": f"bytes {start}-{end}/{len(blob.data)}"}
            )
        return Reply(200, blob.data, props)

    def _append_block(
        self,
        blob: Blob | None,
        policy: ImmutabilityPolicy | None,
        body: bytes,
        common: dict[str, str],
    ) -> Reply:
        """Append Block: the body becomes the next committed block (test_append_block_bytes
        #3-6 of the storage SDK's recordings)."""
        if blob is None:
            return self._blob_error(404, "BlobNotFound")
        if not isinstance(blob, AppendBlob):
            return self._blob_error(409, "InvalidBlobType")
        if (
            policy is not None
            and policy.protects(blob)
            and not policy.allow_protected_append_writes
        ):
            return self._blob_error(409, "BlobImmutableDueToPolicy")
        offset = len(blob.data)
        blob.data += body
        blob.blocks += 1
        blob.etag = Blob(b"").etag
        return Reply(
            201,
            None,
            common
            | {
                "ETag": blob.etag,
                "Last-Modified": formatdate(usegmt=True),
                "x-ms-blob-append-offset": str(offset),
                "x-ms-blob-committed-block-count": str(blob.blocks),
                "x-ms-request-server-encrypted": "true",
            },
        )

    def _worm_refusal(self, policy: ImmutabilityPolicy | None, blob: Blob) -> Reply | None:
        """Azure's answer to a write that would change or remove a blob the container's
        immutability policy still protects; None when the write may go ahead."""
        if policy is not None and policy.protects(blob):
            return self._blob_error(409, "BlobImmutableDueToPolicy")
        return None

    # --- containers and their policies, from Resource Manager --------------------------------

    @property
    def immutability_policies(self) -> dict[tuple[str, str], ImmutabilityPolicy]:
        """(account, container) -> the container's time-based retention policy."""
        return self.__dict__.setdefault("_immutability_policies", {})

    def _provisioned(self, resource: dict[str, Any]) -> None:
        """After DeploymentApi's: a deployed blob container exists in the fake's storage, and
        an immutability policy deployed on it puts it under WORM."""
        super()._provisioned(resource)  # type: ignore[misc]
        if resource["type"] not in (CONTAINERS, IMMUTABILITY_POLICIES):
            return
        parts = resource["id"].split("/")
        account = parts[parts.index("storageAccounts") + 1].lower()
        container = parts[parts.index("containers") + 1]
        self.blobs.setdefault((account, container), {})
        if resource["type"] == IMMUTABILITY_POLICIES:
            properties = resource.get("properties") or {}
            self.immutability_policies[(account, container)] = ImmutabilityPolicy(
                int(properties.get("immutabilityPeriodSinceCreationInDays", 0)),
                bool(properties.get("allowProtectedAppendWrites", False)),
            )

    # --- faults --------------------------------------------------------------------------------

    def fail_blob_requests(
        self,
        status: int,
        code: str,
        times: int = 1,
        method: str | None = None,
        path_pattern: str = ".*",
        comp: str | None = None,
    ) -> None:
        """Answer the next `times` blob requests matching (method, `/<container>/<blob>`
        pattern, ?comp=) with this storage error (e.g. 403 AuthorizationPermissionMismatch:
        the identity lacks a data role; 500 InternalError: an outage)."""
        self.blob_faults.append([re.compile(path_pattern), method, comp, status, code, times])

    @property
    def blob_faults(self) -> list[list[Any]]:
        """The pending blob faults (clear() ends them)."""
        return self.__dict__.setdefault("_blob_faults", [])

    def _blob_fault(self, request: SeenRequest, container: str, name: str) -> Reply | None:
        for fault in self.blob_faults:
            pattern, method, comp, status, code, times = fault
            if (
                times > 0
                and method in (None, request.method)
                and comp in (None, request.query.get("comp"))
                and pattern.search(f"/{container}/{name}")
            ):
                fault[5] = times - 1
                return self._blob_error(status, code, head=request.method == "HEAD")
        return None

    def _holds_blob_data_role(
        self, authorization: str, account: str, container: str, method: str
    ) -> bool:
        """Azure RBAC on the data plane, for managed identities: a token the fake's identity
        endpoint issued acts as that identity, which needs a Storage Blob Data role (Reader to
        read, Contributor or Owner to write) at the container, its account, resource group or
        subscription (role assignments as infra/ deploys them); otherwise 403
        AuthorizationPermissionMismatch (Blob service error codes). The test's own credential
        stands for a person holding every role and is not checked."""
        identity = self.identity_tokens.get(authorization.removeprefix("Bearer "))
        if identity is None:
            return True
        principal = ((self.arm_resources.get(identity.lower()) or {}).get("properties") or {}).get(
            "principalId"
        )
        account_id = next(
            (
                rid
                for rid, doc in self.arm_resources.items()
                if doc.get("type") == "Microsoft.Storage/storageAccounts"
                and str(doc.get("name", "")).lower() == account.lower()
            ),
            None,
        )
        if principal is None or account_id is None:
            return False
        container_id = f"{account_id}/blobservices/default/containers/{container}".lower()
        allowed = BLOB_DATA_READERS if method in ("GET", "HEAD") else BLOB_DATA_WRITERS
        for assignment in self.role_assignments(principal):
            scope = assignment["id"].lower().split(ROLE_ASSIGNMENTS.lower())[0]
            role = str(assignment["properties"]["roleDefinitionId"]).rsplit("/", 1)[-1].lower()
            if role in allowed and (container_id + "/").startswith(scope + "/"):
                return True
        return False

    @staticmethod
    def _blob_error(status: int, code: str, head: bool = False) -> Reply:
        body = (
            None
            if head
            else (
                f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                f"<Message>{code}</Message></Error>"
            )
        )
        return Reply(status, body, {"x-ms-error-code": code, "Content-Type": "application/xml"})

    @staticmethod
    def _list_blobs(
        account: str, container: str, blobs: dict[str, Blob], query: Mapping[str, str]
    ) -> str:
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter")
        include_metadata = "metadata" in query.get("include", "")
        items, prefixes = [], []
        for name in sorted(blobs):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            if delimiter and delimiter in rest:
                sub = prefix + rest.split(delimiter)[0] + delimiter
                if sub not in prefixes:
                    prefixes.append(sub)
                continue
            blob = blobs[name]
            meta = (
                "<Metadata>"
                + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in blob.metadata.items())
                + "</Metadata>"
                if include_metadata
                else ""
            )
            items.append(
                f"<Blob><Name>{escape(name)}</Name><Properties><Creation-Time>{blob.created}"
                f"</Creation-Time><Last-Modified>{blob.created}</Last-Modified><Etag>{blob.etag.strip(chr(34))}"
                f"</Etag><Content-Length>{len(blob.data)}</Content-Length><Content-Type>"
                f"application/octet-stream</Content-Type><BlobType>{_blob_type(blob)}</BlobType>"
                "<AccessTier>Hot</AccessTier><LeaseStatus>unlocked</LeaseStatus><LeaseState>"
                f"available</LeaseState><ServerEncrypted>true</ServerEncrypted></Properties>{meta}</Blob>"
            )
        items += [f"<BlobPrefix><Name>{escape(p)}</Name></BlobPrefix>" for p in prefixes]
        delim = f"<Delimiter>{escape(delimiter)}</Delimiter>" if delimiter else ""
        return (
            '\ufeff<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint='
            f'"https://{account}.blob.core.windows.net/" ContainerName="{container}"><Prefix>'
            f"{escape(prefix)}</Prefix>{delim}<Blobs>{''.join(items)}</Blobs><NextMarker />"
            "</EnumerationResults>"
        )

    # --- storage helpers for tests ---------------------------------------------------------

    def put_files(self, account: str, container: str, prefix: str, directory: Path) -> None:
        """Place a local directory's files in fake storage under `prefix` (job outputs)."""
        blobs = self.blobs.setdefault((account, container), {})
        for path in sorted(Path(directory).rglob("*")):
            if path.is_file():
                blobs[f"{prefix.rstrip('/')}/{path.relative_to(directory).as_posix()}"] = Blob(
                    path.read_bytes()
                )

    def files_under(self, account: str, container: str, prefix: str) -> dict[str, bytes]:
        blobs = self.blobs.get((account, container), {})
        return {
            k[len(prefix) :].lstrip("/"): v.data for k, v in blobs.items() if k.startswith(prefix)
        }


def _blob_type(blob: Blob) -> str:
    return "AppendBlob" if isinstance(blob, AppendBlob) else "BlockBlob"
