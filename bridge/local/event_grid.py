"""A local stand-in for an Event Grid system topic with one webhook subscription.

Events are posted with azure-eventgrid's own publisher, so the webhook receives what that SDK puts
on the wire (header `aeg-sas-key`, a JSON array, CloudEvents as a batch). Delivery follows Event
Grid's rules on a much shorter schedule: 200-204 is success; a connection error or another status
is retried; 400, 401, 403 and 413 are not; when the retries run out the event is dead-lettered.
One worker delivers in publication order (Event Grid promises no order; tests like one), unless a
`Loss` is set: then a seeded share of events is dropped, delivered twice, or held back so that
later events overtake it, as at-least-once delivery in no guaranteed order allows.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.eventgrid import EventGridPublisherClient

Outcome = Literal["pending", "delivered", "dead-lettered", "not-subscribed", "dropped"]

log = logging.getLogger("bridge.local.event_grid")
DEFAULT_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
# Event Grid drops (or dead-letters) these at once: no retry can change the answer.
_NOT_RETRIED = frozenset({400, 401, 403, 413})
_SUCCESS = range(200, 205)
# What Event Grid adds to every delivery (a handshake says SubscriptionValidation instead).
_NOTIFICATION = {"aeg-event-type": "Notification"}


@dataclass(frozen=True)
class Loss:
    """What the local Event Grid does wrong, each a share of published events, seeded."""

    drop: float = 0.0
    duplicate: float = 0.0  # delivered a second time, same event id, as a redelivery
    delay: float = 0.0  # held back so that later events overtake it
    max_delay: float = 0.0  # seconds a delayed or duplicated event is held back, at most
    seed: int = 0


@dataclass
class Delivery:
    """One published event, exactly as sent, and what became of it."""

    event: dict[str, Any]
    outcome: Outcome = "pending"
    attempts: list[str] = field(default_factory=list)  # "200", "500", "ServiceRequestError", ...
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    fault: str | None = None  # "duplicate" or "delayed Ns" when a Loss chose it


class EventGridTopic:
    """Delivers events to `webhook_url` (settable at any time) with retries and dead-lettering."""

    def __init__(
        self,
        *,
        access_key: str,
        webhook_url: str | None = None,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        loss: Loss | None = None,
        dead_letter: Callable[[Delivery], object] | None = None,
    ) -> None:
        self.webhook_url = webhook_url
        self.dead_letter = dead_letter  # where a dead-lettered event is written, if anywhere
        self.access_key = access_key
        self.retry_delays = tuple(retry_delays)
        self.deliveries: list[Delivery] = []
        self._loss = loss or Loss()
        self._random = random.Random(self._loss.seed)
        self._changed = threading.Condition()
        self._pending: list[tuple[float, int, Delivery]] = []  # a heap by due time
        self._order = itertools.count()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None

    @property
    def loss(self) -> Loss:
        return self._loss

    @loss.setter
    def loss(self, loss: Loss) -> None:
        with self._changed:
            self._loss = loss
            self._random = random.Random(loss.seed)

    def start(self) -> EventGridTopic:
        self._stopping.clear()
        self._worker = threading.Thread(target=self._deliver_all, name="event-grid", daemon=True)
        self._worker.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None

    def publish(self, event: dict[str, Any]) -> Delivery:
        delivery = Delivery(event)
        with self._changed:
            self.deliveries.append(delivery)
            loss, chance = self._loss, self._random.random
            if chance() < loss.drop:
                delivery.outcome = "dropped"
                delivery.done.set()
                return delivery
            delay = chance() * loss.max_delay if chance() < loss.delay else 0.0
            if delay:
                delivery.fault = f"delayed {delay:.1f}s"
            self._enqueue(delivery, delay)
            if chance() < loss.duplicate:
                twin = Delivery(event, fault="duplicate")
                self.deliveries.append(twin)
                self._enqueue(twin, chance() * loss.max_delay)
        return delivery

    def settled(self, count: int, timeout: float) -> list[Delivery]:
        """The first `count` deliveries once each has an outcome; TimeoutError if they do not."""
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        chosen = self.deliveries[:count]
        if len(chosen) < count or not all(
            d.done.wait(max(0.0, deadline - time.monotonic())) for d in chosen
        ):
            raise TimeoutError(f"{count} events not settled after {timeout}s: {self.deliveries}")
        return chosen

    def _enqueue(self, delivery: Delivery, delay: float) -> None:
        heapq.heappush(self._pending, (time.monotonic() + delay, next(self._order), delivery))
        self._changed.notify_all()

    def _next(self) -> Delivery | None:
        with self._changed:
            while not self._stopping.is_set():
                if self._pending:
                    due, _, delivery = self._pending[0]
                    wait = due - time.monotonic()
                    if wait <= 0:
                        heapq.heappop(self._pending)
                        return delivery
                    self._changed.wait(wait)
                else:
                    self._changed.wait()
        return None

    def _deliver_all(self) -> None:
        while (delivery := self._next()) is not None:
            url = self.webhook_url
            if url is None:
                delivery.outcome = "not-subscribed"
            else:
                delivery.outcome = self._deliver(delivery, url)
            if delivery.outcome == "dead-lettered" and self.dead_letter is not None:
                try:
                    self.dead_letter(delivery)
                except Exception:  # Event Grid drops what it cannot dead-letter; so do we
                    log.exception("could not dead-letter event %s", delivery.event.get("id"))
            delivery.done.set()

    def _deliver(self, delivery: Delivery, url: str) -> Outcome:
        publisher = EventGridPublisherClient(url, AzureKeyCredential(self.access_key))
        with publisher:
            for delay in (0.0, *self.retry_delays):
                if self._stopping.wait(delay):
                    break
                answer = self._attempt(publisher, delivery.event)
                delivery.attempts.append(answer)
                if answer.isdigit() and int(answer) in _SUCCESS:
                    return "delivered"
                if answer.isdigit() and int(answer) in _NOT_RETRIED:
                    break
        return "dead-lettered"

    @staticmethod
    def _attempt(publisher: EventGridPublisherClient, event: dict[str, Any]) -> str:
        try:
            # A dict in the wire form is sent as it is; retry_total=0 because the schedule is ours.
            publisher.send([event], retry_total=0, headers=_NOTIFICATION)
        except HttpResponseError as exc:
            # The SDK calls anything but 200 an error; Event Grid accepts 200-204.
            return str(exc.status_code)
        except AzureError as exc:  # connection refused, reset, timed out
            return type(exc).__name__
        return "200"
