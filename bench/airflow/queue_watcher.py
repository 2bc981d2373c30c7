"""The poller peer of the benchmark: an `AssetWatcher` trigger fed by a queue it polls.

In Azure, an Airflow user who wants a DAG started by queue messages puts the Azure provider's
`AzureServiceBusQueueTrigger` in an `AssetWatcher`. That trigger loops: read one message from
the queue (completing it before the event is yielded: at most once), yield
`TriggerEvent({"message": body, "queue": name})`, then `asyncio.sleep(poll_interval)`, 60 s by
default. Airflow's triggerer turns each event into an asset event (its `extra` is
`{"from_trigger": True, "payload": <the event's payload>}`) and the scheduler starts the DAGs
scheduled on the asset.

`StorageQueueTrigger` is the same loop on an Azure Storage Queue, which Azurite emulates
locally (Service Bus has no local emulator here). Differences worth knowing:

* The provider reads one message per cycle; so does this trigger by default (`max_messages=1`),
  so a burst of N messages takes N cycles. Raise `max_messages` (up to 32) to drain a batch.
* The provider's receive waits up to `max_wait_time` for a first message (None means the
  Service Bus SDK's 60 s) before it sleeps. Storage Queues cannot wait, so `max_wait_time` here
  re-polls every half second until it runs out; the default 0 is a pure poller, one receive
  every `poll_interval`.
* The payload adds `message_id` and `inserted_on` (the enqueue time, ISO 8601) to the
  provider's `message` and `queue`.

Uses the synchronous `azure.storage.queue.QueueClient` in a worker thread
(`asyncio.to_thread`): the async client needs aiohttp, which Airflow's environment lacks.

Import it under a top-level module name that both the DAG processor and the triggerer can import
(this file in Airflow's plugins folder, which every Airflow process puts on `sys.path`; or in a
folder named by PYTHONPATH): `serialize()` names the class by its module, and the triggerer
imports it by that name. The DAGs folder alone is not enough: only the DAG processor puts it on
`sys.path`, and the triggerer fails with "No module named 'queue_watcher'".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from azure.storage.queue import QueueClient, QueueMessage

WAIT_STEP = 0.5  # seconds between receives while emulating a waiting receive (max_wait_time)
# azure-core logs every request and response at INFO: two entries per poll in the triggerer's log.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


class StorageQueueTrigger(BaseEventTrigger):
    """Yield one event per Storage Queue message, deleting it first; sleep `poll_interval`."""

    def __init__(
        self,
        connection_string: str,
        queue: str,
        poll_interval: float = 60.0,
        max_messages: int = 1,
        max_wait_time: float = 0.0,
    ) -> None:
        super().__init__()
        self.connection_string = connection_string
        self.queue = queue
        self.poll_interval = poll_interval
        self.max_messages = max_messages
        self.max_wait_time = max_wait_time

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "connection_string": self.connection_string,
                "queue": self.queue,
                "poll_interval": self.poll_interval,
                "max_messages": self.max_messages,
                "max_wait_time": self.max_wait_time,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        client = QueueClient.from_connection_string(self.connection_string, self.queue)
        try:
            while True:
                for message in await asyncio.to_thread(self._read, client):
                    yield TriggerEvent(
                        {
                            "message": message.content,
                            "queue": self.queue,
                            "message_id": message.id,
                            "inserted_on": message.inserted_on.isoformat()
                            if message.inserted_on
                            else None,
                        }
                    )
                await asyncio.sleep(self.poll_interval)
        finally:
            await asyncio.to_thread(client.close)

    def _read(self, client: QueueClient) -> list[QueueMessage]:
        """Up to `max_messages` messages, already deleted (as the provider completes its one)."""
        deadline = time.monotonic() + self.max_wait_time
        while True:
            batch = client.receive_messages(
                messages_per_page=self.max_messages, max_messages=self.max_messages
            )
            messages = list(batch)
            if messages or time.monotonic() >= deadline:
                break
            time.sleep(WAIT_STEP)
        for message in messages:
            client.delete_message(message)
        return messages
