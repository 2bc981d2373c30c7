"""The Functions Service Bus trigger, locally: what the host does with `on_submission`'s queue.

The dev host receives through the real `azure-servicebus` SDK with the trigger's semantics
(https://learn.microsoft.com/azure/azure-functions/functions-bindings-service-bus-trigger):

- peek-lock receive, `maxConcurrentCalls` messages at a time per instance, `prefetchCount` ahead;
- with `autoCompleteMessages`, the message is completed when the function returns and abandoned
  when it raises (redelivered at once, its delivery count one more), so the queue's
  `maxDeliveryCount` is the whole retry budget before Service Bus dead-letters it;
- the lock is renewed while the function runs, up to `maxAutoLockRenewalDuration`.

`TriggerOptions` reads those from `host.json`, `QueueOptions` the queue's lock duration and
maximum delivery count from `infra/modules/servicebus.bicep`, so that the local queue is the one
Azure gets (a test keeps them the same).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.settings import timespan_seconds

if TYPE_CHECKING:
    from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage, ServiceBusReceiver

REPO = Path(__file__).resolve().parents[2]
HOST_JSON = REPO / "host.json"
SERVICEBUS_BICEP = REPO / "infra" / "modules" / "servicebus.bicep"
RECEIVE_WAIT_SECONDS = 1.0  # how long one receive waits for a message: bounds a stop's delay
log = logging.getLogger("bridge.devhost")


@dataclass(frozen=True)
class TriggerOptions:
    """host.json's `extensions.serviceBus`, with the extension's defaults where it is silent
    (https://learn.microsoft.com/azure/azure-functions/functions-bindings-service-bus#hostjson-settings)."""

    max_concurrent_calls: int = 16
    max_auto_lock_renewal_seconds: float = 300.0
    auto_complete: bool = True
    prefetch_count: int = 0

    @classmethod
    def from_host_json(cls, path: Path = HOST_JSON) -> TriggerOptions:
        extension = json.loads(path.read_text()).get("extensions", {}).get("serviceBus", {})
        renewal = extension.get("maxAutoLockRenewalDuration", "00:05:00")
        options = cls(
            max_concurrent_calls=int(extension.get("maxConcurrentCalls", cls.max_concurrent_calls)),
            max_auto_lock_renewal_seconds=timespan_seconds(renewal),
            auto_complete=bool(extension.get("autoCompleteMessages", True)),
            prefetch_count=int(extension.get("prefetchCount", 0)),
        )
        if not math.isfinite(options.max_auto_lock_renewal_seconds):
            raise ValueError(f"{path}: maxAutoLockRenewalDuration {renewal!r} is not hh:mm:ss")
        if not options.auto_complete:
            raise ValueError(
                f"{path}: autoCompleteMessages is false, but on_submission settles nothing "
                "itself: every message would stay locked until its lock expired"
            )
        return options


@dataclass(frozen=True)
class QueueOptions:
    """The submission queue's properties as `infra/` creates it."""

    lock_duration_seconds: float
    max_delivery_count: int
    duplicate_detection_window_seconds: float | None  # None: no duplicate detection

    @classmethod
    def from_bicep(cls, path: Path = SERVICEBUS_BICEP) -> QueueOptions:
        text = path.read_text()

        def literal(name: str, pattern: str) -> str | None:
            found = re.search(rf"^\s*{name}:\s*{pattern}\s*(?://.*)?$", text, re.MULTILINE)
            return found.group(1) if found else None

        lock = literal("lockDuration", r"'([^']+)'")
        count = literal("maxDeliveryCount", r"(\d+)")
        if lock is None or count is None:
            raise ValueError(f"{path} sets no literal lockDuration and maxDeliveryCount")
        window = None
        if literal("requiresDuplicateDetection", r"(true|false)") == "true":
            # Service Bus's default window when the queue sets none: 10 minutes.
            window = iso_duration_seconds(
                literal("duplicateDetectionHistoryTimeWindow", r"'([^']+)'") or "PT10M"
            )
        return cls(iso_duration_seconds(lock), int(count), window)


def iso_duration_seconds(text: str) -> float:
    """An ISO 8601 duration of days and time (`PT1M`, `P1DT2H`), as ARM writes one, in seconds."""
    match = re.fullmatch(
        r"P(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", text.strip()
    )
    if match is None or text.strip() in ("P", "PT"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration of days, hours, minutes, seconds")
    days, hours, minutes, seconds = match.groups()
    return (
        int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60
        + float(seconds or 0)
    )  # fmt: skip


class ServiceBusTrigger:
    """Receives `queue` through `client` and calls `handle` once per delivery, as the Functions
    host would: `max_concurrent_calls` receivers, each settling what it received."""

    def __init__(
        self,
        client: ServiceBusClient,
        queue: str,
        handle: Callable[[ServiceBusReceivedMessage], object],
        options: TriggerOptions,
        stopping: threading.Event,
    ) -> None:
        self.client = client
        self.queue = queue
        self.handle = handle
        self.options = options
        self.stopping = stopping
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        from azure.servicebus import AutoLockRenewer

        self._renewer = AutoLockRenewer(
            max_lock_renewal_duration=self.options.max_auto_lock_renewal_seconds,
            max_workers=self.options.max_concurrent_calls,
        )
        self.threads = [
            threading.Thread(target=self._listen, name=f"servicebus-trigger-{n}", daemon=True)
            for n in range(self.options.max_concurrent_calls)
        ]
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout=timeout)
        self._renewer.close()

    def _listen(self) -> None:
        while not self.stopping.is_set():
            try:
                with self.client.get_queue_receiver(
                    self.queue, prefetch_count=self.options.prefetch_count
                ) as receiver:
                    while not self.stopping.is_set():
                        for message in receiver.receive_messages(
                            max_message_count=1, max_wait_time=RECEIVE_WAIT_SECONDS
                        ):
                            self._invoke(receiver, message)
            except Exception:  # the namespace restarting, or stopping under us: attach again
                if not self.stopping.is_set():
                    log.exception("Service Bus receive on %r failed", self.queue)
                    self.stopping.wait(1.0)

    def _invoke(self, receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage) -> None:
        self._renewer.register(receiver, message)
        try:
            self.handle(message)
        except Exception:
            log.exception(
                "submission message %s failed (delivery %s); abandoned, so Service Bus redelivers",
                message.message_id, message.delivery_count,
            )  # fmt: skip
            self._settle(receiver.abandon_message, message)
            return
        self._settle(receiver.complete_message, message)

    def _settle(
        self,
        settle: Callable[[ServiceBusReceivedMessage], None],
        message: ServiceBusReceivedMessage,
    ) -> None:
        try:
            settle(message)
        except Exception as exc:  # lock lost: Service Bus delivers it again, as it would in Azure
            log.warning("could not settle message %s: %s", message.message_id, exc)
