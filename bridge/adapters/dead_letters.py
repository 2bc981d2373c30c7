"""Event Grid's dead-letter container, read with `azure-storage-blob`: the blobs Event Grid writes
when it gives up on a delivery (after 24 hours of retries, or at once on a 400, 401, 403 or 413),
as items for `bridge replay`. Blobs are read, never changed: they stay as the audit trail, and
replaying one twice changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from azure.core.exceptions import AzureError
from azure.storage.blob import ContainerClient

from bridge.errors import TransientError
from bridge.replay import Item

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

SOURCE = "eventgrid-deadletter"


class DeadLetterBlobs:
    def __init__(self, container: ContainerClient) -> None:
        self.container = container

    @classmethod
    def from_url(cls, container_url: str, credential: TokenCredential) -> DeadLetterBlobs:
        """The container by URL (the deployment's `EVENTGRID_DEADLETTER_URL` output)."""
        return cls(ContainerClient.from_container_url(container_url, credential=credential))

    @classmethod
    def from_connection_string(cls, connection_string: str, container: str) -> DeadLetterBlobs:
        return cls(ContainerClient.from_connection_string(connection_string, container))

    def items(self, prefix: str | None = None) -> Iterator[Item]:
        try:
            names = [blob.name for blob in self.container.list_blobs(name_starts_with=prefix)]
            for name in sorted(names):  # <SUBSCRIPTION>/<y>/<m>/<d>/<h>/<guid>.json
                body = self.container.download_blob(name).readall()
                yield Item(SOURCE, name, "events", body)
        except AzureError as exc:
            raise TransientError(
                f"could not read the dead-letter container {self.container.url}: "
                f"{type(exc).__name__}"
            ) from exc

    def close(self) -> None:
        self.container.close()
