"""Azurite, the Azure Storage emulator from npm: Table storage for the ledger and Blob storage for
Event Grid's dead-letter container. (Submissions travel on the local Service Bus,
`bridge.local.servicebus`.)"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from bridge.local.process import Lifecycle, Service, free_port, port_ready

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key, published in Microsoft's documentation: not a secret.
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
REPO = Path(__file__).resolve().parents[2]


def azurite_binary() -> str:
    local = REPO / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found is None:
        raise FileNotFoundError("azurite is not installed: run `make setup` (npm install)")
    return found


@dataclass
class Azurite(Lifecycle):
    """A running Azurite with Table and Queue services on fresh loopback ports."""

    workdir: Path
    table_port: int = 0
    queue_port: int = 0
    blob_port: int = 0
    persistent: bool = False
    _service: Service | None = None

    @property
    def table_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.table_port}/{ACCOUNT}"

    @property
    def queue_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.queue_port}/{ACCOUNT}"

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.blob_port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint={self.table_endpoint};QueueEndpoint={self.queue_endpoint};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    @property
    def process_group(self) -> int | None:
        """The running server's process group (for CPU accounting), or None if stopped."""
        process = self._service.process if self._service else None
        return process.pid if process is not None else None

    def start(self, timeout: float = 30.0) -> Azurite:
        self.table_port = self.table_port or free_port()
        self.queue_port = self.queue_port or free_port()
        self.blob_port = self.blob_port or free_port()
        data = self.workdir / "azurite"
        data.mkdir(parents=True, exist_ok=True)
        storage = ["--location", str(data)] if self.persistent else ["--inMemoryPersistence"]
        argv = [
            azurite_binary(),
            "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
            "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
            "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
            *storage, "--disableTelemetry", "--skipApiVersionCheck", "--silent",
        ]  # fmt: skip
        self._service = Service(
            "azurite",
            argv,
            log=self.workdir / "logs" / "azurite.log",
            cwd=data,
            ready=lambda: port_ready(self.table_port)() and port_ready(self.queue_port)(),
        ).start()
        self._service.wait_ready(timeout)
        return self

    def stop(self) -> None:
        if self._service is not None:
            self._service.stop(grace=5)
            self._service = None
