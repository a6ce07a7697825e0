"""Blobs of a workspace's datastores, read through azure-storage-blob.

Data assets and the data collector's files live in the workspace's blob datastores, addressed
as `azureml://.../datastores/<name>/paths/<path>`. The datastore resource says which account and
container hold them; the blobs are then listed and read with the storage SDK on the caller's
own Entra identity (the workspaces are identity-based: no account key is involved), through the
connection's transport (the same injection point as MLClient's).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.ai.ml import MLClient
from azure.ai.ml.entities import NoneCredentialConfiguration
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from backends.azure.clients import AzureConnection
from backends.azure.errors import AzureResourceMissing, explained

DATASTORE_URI = re.compile(r"datastores/(?P<datastore>[^/]+)/paths/(?P<path>.+)$")


@dataclass(frozen=True)
class DatastorePath:
    """A path inside a named datastore of the workspace."""

    datastore: str
    path: str

    @classmethod
    def parse(cls, uri: str) -> DatastorePath:
        """`azureml://[subscriptions/.../workspaces/<ws>/]datastores/<name>/paths/<path>`."""
        match = DATASTORE_URI.search(uri)
        if match is None:
            raise ValueError(
                f"{uri!r} is not a datastore path (azureml://datastores/<name>/paths/<path>); "
                "register the data asset from a file so Azure stores it in a datastore"
            )
        return cls(match["datastore"], match["path"].strip("/"))


class Datastores:
    """Blob access to one workspace's datastores (a container client per datastore)."""

    def __init__(self, client: MLClient, conn: AzureConnection, where: str) -> None:
        self.client = client
        self.connection = conn
        self.where = where
        self._containers: dict[str, ContainerClient] = {}

    def container(self, datastore: str) -> ContainerClient:
        if datastore not in self._containers:
            with explained(f"read datastore {datastore} of {self.where}"):
                store = self.client.datastores.get(datastore)
                credential: Any = self.connection.credential
                if not isinstance(store.credentials, NoneCredentialConfiguration | type(None)):
                    secrets = self.client.datastores.get(datastore, include_secrets=True)
                    credential = getattr(secrets.credentials, "sas_token", None) or getattr(
                        secrets.credentials, "account_key", None
                    )
            protocol = getattr(store, "protocol", None) or "https"
            suffix = getattr(store, "endpoint", None) or "core.windows.net"
            retry = self.connection.retry
            kwargs: dict[str, Any] = {
                "retry_total": retry.total,  # the storage SDK has its own retry policy
                "connection_timeout": retry.connection_timeout,
                "read_timeout": retry.read_timeout,
            }
            if self.connection.transport is not None:
                kwargs["transport"] = self.connection.transport
            self._containers[datastore] = ContainerClient(
                f"{protocol}://{store.account_name}.blob.{suffix}",
                str(store.container_name),
                credential=credential,
                **kwargs,
            )
        return self._containers[datastore]

    def names(self, where: DatastorePath) -> Iterator[str]:
        """The blob names under a folder (or the one blob at a file's path), sorted."""
        container = self.container(where.datastore)
        with explained(f"list {where.path} in datastore {where.datastore} of {self.where}"):
            yield from sorted(b.name for b in container.list_blobs(name_starts_with=where.path))

    def read(self, datastore: str, name: str) -> bytes:
        container = self.container(datastore)
        with explained(f"read {name} from datastore {datastore} of {self.where}"):
            try:
                return bytes(container.download_blob(name).readall())
            except ResourceNotFoundError as missing:
                raise AzureResourceMissing(
                    f"{name} is not in datastore {datastore} of {self.where}; the data asset "
                    "points at a blob that was deleted"
                ) from missing

    def download_file(self, where: DatastorePath, target: Path) -> Path:
        """Copy one blob to `target` (written atomically: a crash leaves no half file)."""
        data = self.read(where.datastore, where.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)
        return target
