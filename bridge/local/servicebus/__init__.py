"""A local Service Bus: an AMQP 1.0 peer on loopback that the real `azure-servicebus` SDK talks to.

It serves one namespace with the queues created on it (`create_queue`, each with its lock duration
and max delivery count and a dead-letter sub-queue), in a thread of this process. The SDK reaches
it through `connection_string`, whose `UseDevelopmentEmulator=true` makes the SDK use plain TCP on
the given port, as it does for Microsoft's Service Bus emulator
(https://learn.microsoft.com/azure/service-bus-messaging/test-locally-with-service-bus-emulator).

    with LocalServiceBus() as bus:
        bus.create_queue("submissions", lock_duration=timedelta(seconds=5), max_delivery_count=3)
        client = ServiceBusClient.from_connection_string(bus.connection_string)

`broker.py` holds queues, messages, locks and dead-letter queues; `peer.py` the AMQP side;
`codec.py` the message sections. What each follows in Service Bus's documentation is cited there.

Not here (yet): topics and subscriptions, sessions, scheduled and deferred messages, time-to-live
expiry, transactions, persistence across restarts.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Self

from bridge.local.process import Lifecycle, ServiceFailed, free_port, port_ready
from bridge.local.servicebus.broker import (
    DEAD_LETTER_SUFFIX,
    DEFAULT_LOCK_DURATION,
    DEFAULT_MAX_DELIVERY_COUNT,
    MAX_DELIVERY_COUNT_DESCRIPTION,
    MAX_DELIVERY_COUNT_EXCEEDED,
    Namespace,
)
from bridge.local.servicebus.peer import Peer
from bridge.provider.senders import emulator_connection_string

__all__ = [
    "DEAD_LETTER_SUFFIX",
    "MAX_DELIVERY_COUNT_DESCRIPTION",
    "MAX_DELIVERY_COUNT_EXCEEDED",
    "LocalServiceBus",
]


class LocalServiceBus(Lifecycle):
    """One local Service Bus namespace on a free loopback port, started and stopped with `with`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.namespace = Namespace()
        self._peer: Peer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """`host:port`, what the operator's sender takes as its namespace in emulator mode."""
        if not self.port:
            raise RuntimeError("the local Service Bus is not started")
        return f"{self.host}:{self.port}"

    @property
    def connection_string(self) -> str:
        """Microsoft's emulator's connection string, with its placeholder key (any key is
        accepted): what the Functions host's `BRIDGE_SERVICEBUS` connection holds locally."""
        return emulator_connection_string(self.address)

    def create_queue(
        self,
        name: str,
        *,
        lock_duration: timedelta | float = DEFAULT_LOCK_DURATION,
        max_delivery_count: int = DEFAULT_MAX_DELIVERY_COUNT,
        duplicate_detection_window: timedelta | float | None = None,
    ) -> None:
        """A queue and its `<name>/$deadletterqueue`, with Service Bus's defaults: a one-minute
        lock, 10 deliveries, no duplicate detection (see `broker.py`)."""
        self.namespace.create_queue(
            name,
            lock_duration=lock_duration,
            max_delivery_count=max_delivery_count,
            duplicate_detection_window=duplicate_detection_window,
        )

    def start(self) -> Self:
        if self._thread is not None:
            return self
        last: OSError | None = None
        for _ in range(5):  # another process may take the free port before we bind it
            peer = Peer(self.namespace)
            port = free_port()
            try:
                peer.listen(self.host, port)
            except OSError as exc:
                last = exc
                continue
            self._peer, self.port = peer, port
            break
        else:
            raise ServiceFailed(f"local Service Bus could not listen on {self.host}: {last}")
        self._thread = threading.Thread(
            target=self._peer.run, name=f"local-servicebus-{self.port}", daemon=True
        )
        self._thread.start()
        if not port_ready(self.port)():
            self.stop()
            raise ServiceFailed(f"local Service Bus is not accepting on port {self.port}")
        return self

    def stop(self) -> None:
        peer, thread = self._peer, self._thread
        self._peer, self._thread = None, None
        if peer is None or thread is None:
            return
        peer.request_stop()
        thread.join(timeout=10)
        if thread.is_alive():
            raise ServiceFailed("local Service Bus did not stop within 10 s")
