"""The poller peer of the benchmark: an `AssetWatcher` trigger fed by a Service Bus queue.

In Azure, an Airflow user who wants a DAG started by queue messages puts the Azure provider's
`AzureServiceBusQueueTrigger` in an `AssetWatcher`. That trigger loops: read one message from
the queue (a receive that waits up to `max_wait_time` for it, completing it before the event is
yielded: at most once), yield `TriggerEvent({"message": body, "queue": name})`, then
`asyncio.sleep(poll_interval)`, 60 s by default. Airflow's triggerer turns each event into an
asset event (its `extra` is `{"from_trigger": True, "payload": <the event's payload>}`) and the
scheduler starts the DAGs scheduled on the asset.

`ServiceBusQueueTrigger` is that loop on one queue, with the `azure-servicebus` SDK, against the
local stack's Service Bus (`bridge.local.servicebus`, reached by its connection string) or an
Azure namespace. As the provider's:

* One message per cycle: a burst of N messages takes N cycles.
* Each read opens a client and a receiver of its own (the provider's hook makes a new
  `ServiceBusClient` per read), receives with `max_message_count=1` and `max_wait_time`, and
  completes what it got before the event is yielded. `max_wait_time` None (or 0, which the
  provider also reads as None) is the SDK's default: a receive that waits up to 60 s for a first
  message, then the `poll_interval` sleep.
* Opening the client and its receiver takes the SDK about half a second even on loopback (it
  paces its AMQP handshake), closing them about as long: a cycle with no message is
  `max_wait_time + poll_interval` plus about a second.

Differences worth knowing:

* The SDK's sync client in a worker thread (`asyncio.to_thread`, the event loop's default
  executor), where the provider runs its sync hook with asgiref's `sync_to_async` (by default on
  one thread shared by every such call in the process). A read holds its thread for up to
  `max_wait_time`. The SDK's async client works here too (it needs aiohttp only for WebSockets),
  but each new client blocks the event loop for about 40 ms (an SSL context loaded even for the
  emulator's plain TCP, and a blocking connect), which a trigger must not do.
* The connection is a connection string in the trigger's kwargs, not an Airflow connection id.
* The payload's `message` is the body as text (`str(message)`); it adds `message_id` and
  `enqueued_time` (ISO 8601) to the provider's `message` and `queue`.

Import it under a top-level module name that both the DAG processor and the triggerer can import
(this file in Airflow's plugins folder, which every Airflow process puts on `sys.path`; or in a
folder named by PYTHONPATH): `serialize()` names the class by its module, and the triggerer
imports it by that name. The DAGs folder alone is not enough: only the DAG processor puts it on
`sys.path`, and the triggerer fails with "No module named 'queue_watcher'".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from azure.servicebus import ServiceBusClient

# The SDK's AMQP layer logs every connection's state changes at INFO: a handful of entries per
# read in the triggerer's log.
logging.getLogger("azure.servicebus").setLevel(logging.WARNING)


class ServiceBusQueueTrigger(BaseEventTrigger):
    """Yield one event per Service Bus message, completing it first; sleep `poll_interval`."""

    def __init__(
        self,
        connection_string: str,
        queue: str,
        poll_interval: float = 60.0,
        max_wait_time: float | None = None,
    ) -> None:
        super().__init__()
        self.connection_string = connection_string
        self.queue = queue
        self.poll_interval = poll_interval
        self.max_wait_time = max_wait_time or None  # as the provider: 0 is the SDK's default

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "connection_string": self.connection_string,
                "queue": self.queue,
                "poll_interval": self.poll_interval,
                "max_wait_time": self.max_wait_time,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            payload = await asyncio.to_thread(self._read)
            if payload is not None:
                yield TriggerEvent(payload)
            await asyncio.sleep(self.poll_interval)

    def _read(self) -> dict[str, Any] | None:
        """One message's payload, the message already completed; None if none came in time."""
        with (
            ServiceBusClient.from_connection_string(self.connection_string) as client,
            client.get_queue_receiver(self.queue) as receiver,
        ):
            received = receiver.receive_messages(
                max_message_count=1, max_wait_time=self.max_wait_time
            )
            if not received:
                return None
            message = received[0]
            receiver.complete_message(message)
        enqueued = message.enqueued_time_utc
        return {
            "message": str(message),
            "queue": self.queue,
            "message_id": message.message_id,
            "enqueued_time": enqueued.isoformat() if enqueued else None,
        }
