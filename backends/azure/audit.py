"""The audit trail on Azure: append blobs in a container under a WORM (immutability) policy.

infra/shared.bicep creates the container (`orchestration.audit_container` of the orchestration
storage account) with a time-based retention policy that allows protected append writes: while
the period runs, Azure refuses to overwrite or delete any blob in it, for every identity, and
only lets new blocks be appended to append blobs. So the flows' identity can add records and
nobody, that identity included, can rewrite one.

One append blob per month (`records/2026-11.jsonl`), one record per Append Block (one JSON
line): an Append Block is atomic, so concurrent writers never interleave and each record lands
whole. A month's blob is created on its first record with If-None-Match: * so two writers
starting the month together never replace each other's blob (the loser's create is refused and
it appends to the winner's). The storage SDK retries transient failures; a retry after a lost
reply may write a record twice (never lose one). An append blob holds at most 50,000 blocks,
far more records than a month has.

Storage calls go through the connection's credential and transport (no keys, SAS or connection
strings), like the datastores' (datastores.py).
"""

from __future__ import annotations

import json
from contextlib import suppress
from dataclasses import asdict
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import ContainerClient, LinearRetry

from backends.azure.clients import AzureConnection, connection
from backends.azure.errors import AzureOperationFailed
from backends.topology import Topology
from records.audit import AuditRecord, AuditWriteFailed

PREFIX = "records/"


def blob_name(record: AuditRecord) -> str:
    """The month's append blob a record belongs to, by its own timestamp (`at`, UTC ISO)."""
    return f"{PREFIX}{record.at[:7]}.jsonl"


class AzureAuditTrail:
    """Records as JSON lines in monthly append blobs of one blob container."""

    def __init__(self, account_url: str, container: str, conn: AzureConnection) -> None:
        retry = conn.retry
        kwargs: dict[str, Any] = {
            # the storage SDK has its own retry policy (it ignores azure-core's retry_* kwargs)
            # azure-storage-blob annotates both as int, but get_backoff_time feeds them to
            # random.uniform, so fractions of a second work as they are
            "retry_policy": LinearRetry(
                backoff=retry.backoff_factor,  # type: ignore[arg-type]
                random_jitter_range=retry.backoff_factor / 2,  # type: ignore[arg-type]
                retry_total=retry.status,
            ),
            "connection_timeout": retry.connection_timeout,
            "read_timeout": retry.read_timeout,
        }
        if conn.transport is not None:
            kwargs["transport"] = conn.transport
        self.container = ContainerClient(
            account_url, container, credential=conn.credential, **kwargs
        )
        self.where = f"{account_url.rstrip('/')}/{container}"

    def append(self, record: AuditRecord) -> None:
        name = blob_name(record)
        line = (json.dumps(asdict(record), default=str) + "\n").encode()
        blob = self.container.get_blob_client(name)
        try:
            try:
                blob.append_block(line)
            except ResourceNotFoundError as missing:
                if _code(missing) == "ContainerNotFound":
                    raise
                # another writer may have created this month's blob first: append to theirs
                with suppress(ResourceExistsError):
                    blob.create_append_blob(match_condition=MatchConditions.IfMissing)
                blob.append_block(line)
        except AzureError as error:
            raise AuditWriteFailed(
                f"could not append the {record.action!r} record for {record.subject} to the "
                f"audit trail {self.where}/{name}: {_reason(error)}; the step was not taken"
            ) from error

    def read(self) -> list[AuditRecord]:
        try:
            names = sorted(b.name for b in self.container.list_blobs(name_starts_with=PREFIX))
            texts = [self.container.download_blob(n).readall().decode() for n in names]
        except AzureError as error:
            raise AzureOperationFailed(
                f"could not read the audit trail {self.where}: {_reason(error)}"
            ) from error
        return [
            AuditRecord(**json.loads(line)) for text in texts for line in text.splitlines() if line
        ]


def _code(error: AzureError) -> str | None:
    """The storage error code as Azure sent it (the SDK gives known ones as an enum)."""
    code = getattr(error, "error_code", None)
    return str(getattr(code, "value", code)) if code else None


def _reason(error: AzureError) -> str:
    """What Azure said and what to do about it."""
    if not isinstance(error, HttpResponseError) or error.status_code is None:
        return (
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}. "
            "Check that the identity can get a token and reach the storage account, then re-run"
        )
    status, code = error.status_code, _code(error) or ""
    said = f"Azure answered {status} {code}".rstrip()
    if status in (401, 403):
        return (
            f"{said}. Give the flows' identity 'Storage Blob Data Contributor' on the audit "
            "container (infra/shared.bicep assigns it), then re-run"
        )
    if status == 404:
        return (
            f"{said}. The container is missing: deploy infra/shared.bicep (it creates the "
            "audit container and its immutability policy), then re-run"
        )
    if status == 409:
        return f"{said}. The container's immutability policy refused the write"
    return f"{said} after the storage SDK's retries. Try again later"


def open_audit_trail(topology: Topology) -> AzureAuditTrail:
    orchestration = topology.require_orchestration()
    return AzureAuditTrail(orchestration.account_url, orchestration.audit_container, connection())
