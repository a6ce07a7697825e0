"""Azure Blob Storage as the storage SDK speaks it: put/get/head, blocks, metadata, listing."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from email.utils import formatdate
from pathlib import Path
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
        if request.method == "PUT":
            comp = query.get("comp")
            if comp == "metadata":
                if name not in blobs:
                    return self._blob_error(404, "BlobNotFound")
                blobs[name].metadata = meta_headers
                return Reply(200, None, common | {"ETag": blobs[name].etag})
            if comp == "block":
                self._staged.setdefault((account, container, name), {})[query["blockid"]] = (
                    request.body
                )
                return Reply(201, None, common)
            if comp == "blocklist":
                staged = self._staged.pop((account, container, name), {})
                ids = re.findall(
                    r"<(?:Latest|Committed|Uncommitted)>([^<]+)<", request.body.decode()
                )
                blobs[name] = Blob(b"".join(staged[i] for i in ids), meta_headers)
                return Reply(201, None, common | {"ETag": blobs[name].etag})
            if comp in ("properties", "tier"):
                return Reply(200, None, common)
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
        blob = blobs.get(name)
        if blob is None:
            return self._blob_error(404, "BlobNotFound", head=request.method == "HEAD")
        props = common | {
            "Content-Type": "application/octet-stream",
            "ETag": blob.etag,
            "Last-Modified": blob.created,
            "x-ms-creation-time": blob.created,
            "x-ms-blob-type": "BlockBlob",
            "Accept-Ranges": "bytes",
            **{f"x-ms-meta-{k}": v for k, v in blob.metadata.items()},
        }
        if request.method == "HEAD":
            return Reply(200, None, props | {"Content-Length": str(len(blob.data))})
        # a download answers without the x-ms-meta-* headers the HEAD has (the recorded GETs,
        # test_create_get_download_model_registry #20-24, of blobs #9 had set metadata on)
        props = {k: v for k, v in props.items() if not k.startswith("x-ms-meta-")}
        if request.method == "DELETE":
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
                "application/octet-stream</Content-Type><BlobType>BlockBlob</BlobType>"
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
