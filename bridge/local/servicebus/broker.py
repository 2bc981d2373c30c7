"""The state of a local Service Bus namespace: queues, their messages, locks and dead-letter queues.

Nothing here knows AMQP. A message is kept as the encoded AMQP message its sender sent (opaque
bytes) with what the broker adds: sequence number, enqueued time, delivery count, lock and
dead-letter reason. `peer.py` turns these into what goes on the wire. Every method is safe to call
from any thread (one lock for the namespace); the peer's event loop calls `expire_locks` often.

Behaviours, each as Service Bus Standard documents it:
- Sequence numbers: unique per entity, assigned on acceptance, increasing
  (https://learn.microsoft.com/azure/service-bus-messaging/message-sequencing).
- Peek-lock: a received message is locked for the queue's lock duration, invisible to other
  receivers; complete removes it; abandon releases the lock at once; an expired lock makes it
  available again; each abandon or expiry increments the delivery count
  (https://learn.microsoft.com/azure/service-bus-messaging/message-transfers-locks-settlement).
  A lock can be renewed for another lock duration while it holds; a settlement or renewal with a
  lost lock fails (MessageLockLost).
- Delivery count: "Number of deliveries that have been attempted for this message. The count is
  incremented when a message lock expires, or the message is explicitly abandoned by the
  receiver." It starts at 1 as .NET shows it
  (https://learn.microsoft.com/dotnet/api/azure.messaging.servicebus.servicebusreceivedmessage.deliverycount);
  on the wire the AMQP header carries the number of *previous* attempts, zero on the first
  delivery, which is what the Python SDK's `delivery_count` shows (the AMQP header class of the
  Azure Python SDKs: https://learn.microsoft.com/python/api/azure-eventhub/azure.eventhub.amqp.amqpmessageheader).
- Max delivery count (default 10, minimum 1): "A message is automatically deadlettered after this
  number of deliveries"
  (https://learn.microsoft.com/dotnet/api/azure.messaging.servicebus.administration.queueproperties.maxdeliverycount),
  with DeadLetterReason `MaxDeliveryCountExceeded` and DeadLetterErrorDescription
  "Message couldn't be consumed after maximum delivery attempts."
  (https://learn.microsoft.com/azure/service-bus-messaging/service-bus-dead-letter-queues).
- Dead-letter queue: `<queue>/$deadletterqueue`, created with the queue, receivable and peekable
  like any queue; "you can't dead-letter a message from a DLQ" (same page), so no max delivery
  count applies there. Here a dead-lettered message keeps its sequence number.
- Peek: returns active and locked messages from a sequence number on, without locking them
  (https://learn.microsoft.com/azure/service-bus-messaging/message-browsing).
- Duplicate detection, when the queue requires it: "the MessageId of all messages sent into a
  queue or topic during a specified time window is tracked. If any new message is sent with
  MessageId that was logged during the time window, the message is reported as accepted (the
  send operation succeeds), but the newly sent message is instantly ignored and dropped. No other
  parts of the message other than the MessageId are considered"; the window is 20 s to 7 days,
  10 minutes by default (https://learn.microsoft.com/azure/service-bus-messaging/duplicate-detection).
  A message without an id is never a duplicate here.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

DEAD_LETTER_SUFFIX = "/$deadletterqueue"
MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
MAX_DELIVERY_COUNT_DESCRIPTION = "Message couldn't be consumed after maximum delivery attempts."
DEFAULT_LOCK_DURATION = timedelta(minutes=1)
DEFAULT_MAX_DELIVERY_COUNT = 10
DEFAULT_DUPLICATE_DETECTION_WINDOW = timedelta(minutes=10)


class EntityNotFound(LookupError):
    """No queue (or dead-letter queue) of that name: Service Bus answers amqp:not-found."""


class LockLost(LookupError):
    """The lock token is unknown, settled or expired: Service Bus answers message-lock-lost."""


class NotAllowed(ValueError):
    """An operation the entity refuses, such as dead-lettering from a dead-letter queue."""


def now_ms() -> int:
    return int(time.time() * 1000)


def as_seconds(duration: timedelta | float) -> float:
    return duration.total_seconds() if isinstance(duration, timedelta) else float(duration)


@dataclass
class Message:
    """One message as the broker holds it: the sender's encoding and what the broker adds."""

    payload: bytes  # the encoded AMQP message (bare message and annotations) as sent
    sequence_number: int
    enqueued_time_ms: int
    delivery_count: int = 0  # deliveries attempted, the current one included (1 on the first)
    lock_token: uuid.UUID | None = None
    locked_until_ms: int = 0
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None
    dead_letter_source: str | None = None

    @property
    def locked(self) -> bool:
        return self.lock_token is not None


@dataclass(frozen=True)
class Delivery:
    """A message handed to a receiver: a snapshot of the message for encoding, and its lock."""

    entity: str
    message: Message
    lock_token: uuid.UUID


@dataclass
class Entity:
    """A queue or a queue's dead-letter sub-queue: messages in sequence-number order."""

    path: str
    lock_duration: float
    max_delivery_count: int | None  # None: a dead-letter queue never dead-letters
    dead_letter: Entity | None = None
    messages: dict[int, Message] = field(default_factory=dict)  # insertion = sequence order
    next_sequence_number: int = 1
    duplicate_detection_window: float | None = None  # seconds; None: duplicates are kept
    seen_ids: dict[str, int] = field(default_factory=dict)  # message id -> first sent (ms)

    def duplicate(self, message_id: str | None, now: int) -> bool:
        """Whether a message with this id was accepted within the window (and, if not, note it)."""
        if self.duplicate_detection_window is None or message_id is None:
            return False
        horizon = now - int(self.duplicate_detection_window * 1000)
        for seen, at in list(self.seen_ids.items()):  # oldest first: stop at the first kept
            if at > horizon:
                break
            del self.seen_ids[seen]
        if message_id in self.seen_ids:
            return True
        self.seen_ids[message_id] = now
        return False

    def append(self, message: Message) -> Message:
        message.sequence_number = self.next_sequence_number
        self.next_sequence_number += 1
        self.messages[message.sequence_number] = message
        return message


class Namespace:
    """All queues of one local namespace, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._entities: dict[str, Entity] = {}  # lower-case path -> entity (names are case-blind)
        self._locks: dict[uuid.UUID, tuple[Entity, Message]] = {}

    # --- entities ---------------------------------------------------------------------------

    def create_queue(
        self,
        name: str,
        *,
        lock_duration: timedelta | float = DEFAULT_LOCK_DURATION,
        max_delivery_count: int = DEFAULT_MAX_DELIVERY_COUNT,
        duplicate_detection_window: timedelta | float | None = None,
    ) -> Entity:
        """A queue and its dead-letter sub-queue. Service Bus allows a lock duration of 5 s to
        5 min and a duplicate detection window of 20 s to 7 days; locally any positive duration
        is accepted so that tests need not wait."""
        seconds = as_seconds(lock_duration)
        window = (
            None if duplicate_detection_window is None else as_seconds(duplicate_detection_window)
        )
        if window is not None and window <= 0:
            raise ValueError("duplicate_detection_window must be positive")
        if seconds <= 0:
            raise ValueError("lock_duration must be positive")
        if max_delivery_count < 1:
            raise ValueError("max_delivery_count must be at least 1")
        name = name.strip("/")
        with self._lock:
            if name.lower() in self._entities:
                raise ValueError(f"queue {name!r} exists")
            dead = Entity(name + DEAD_LETTER_SUFFIX, seconds, None)
            queue = Entity(
                name, seconds, max_delivery_count, dead_letter=dead,
                duplicate_detection_window=window,
            )  # fmt: skip
            self._entities[name.lower()] = queue
            self._entities[dead.path.lower()] = dead
            return queue

    def entity(self, path: str) -> Entity:
        with self._lock:
            found = self._entities.get(path.strip("/").lower())
        if found is None:
            raise EntityNotFound(path)
        return found

    def has_entity(self, path: str) -> bool:
        with self._lock:
            return path.strip("/").lower() in self._entities

    # --- send and receive -------------------------------------------------------------------

    def enqueue(
        self,
        path: str,
        payloads: Sequence[bytes],
        message_ids: Sequence[str | None] | None = None,
    ) -> list[int | None]:
        """Accept messages (a batch is accepted whole); their sequence numbers, None for a
        duplicate the queue dropped."""
        entity = self.entity(path)
        if entity.max_delivery_count is None:
            raise NotAllowed("messages reach a dead-letter queue only by dead-lettering")
        ids = list(message_ids) if message_ids is not None else [None] * len(payloads)
        with self._lock:
            enqueued = now_ms()
            return [
                None if entity.duplicate(message_id, enqueued)
                else entity.append(Message(payload, 0, enqueued)).sequence_number
                for payload, message_id in zip(payloads, ids, strict=True)
            ]  # fmt: skip

    def lock_next(self, path: str) -> Delivery | None:
        """The first available message, locked for the entity's lock duration."""
        entity = self.entity(path)
        with self._lock:
            self._expire(now_ms())
            for message in entity.messages.values():
                if not message.locked:
                    message.delivery_count += 1
                    message.lock_token = uuid.uuid4()
                    message.locked_until_ms = now_ms() + int(entity.lock_duration * 1000)
                    self._locks[message.lock_token] = (entity, message)
                    return Delivery(entity.path, _copy(message), message.lock_token)
        return None

    def take_next(self, path: str) -> Delivery | None:
        """Receive-and-delete: the first available message, removed at once."""
        delivery = self.lock_next(path)
        if delivery is not None:
            self.complete(delivery.lock_token)
        return delivery

    def available(self, path: str) -> bool:
        entity = self.entity(path)
        with self._lock:
            return any(not m.locked for m in entity.messages.values())

    # --- settlement -------------------------------------------------------------------------

    def complete(self, token: uuid.UUID) -> None:
        with self._lock:
            entity, message = self._held(token)
            self._unlock(message)
            del entity.messages[message.sequence_number]

    def abandon(self, token: uuid.UUID) -> None:
        """Back to the queue at once; the attempt counts (dead-letters at max delivery count)."""
        with self._lock:
            entity, message = self._held(token)
            self._unlock(message)
            self._after_failed_delivery(entity, message)

    def release(self, token: uuid.UUID) -> None:
        """AMQP `released`: the receiver never looked at the message (the SDK releases what it
        prefetched but was not asked for), so the attempt is not counted."""
        with self._lock:
            _, message = self._held(token)
            self._unlock(message)
            message.delivery_count -= 1

    def dead_letter(self, token: uuid.UUID, reason: str | None, description: str | None) -> None:
        with self._lock:
            entity, message = self._held(token)
            if entity.dead_letter is None:
                raise NotAllowed("a message cannot be dead-lettered from a dead-letter queue")
            self._unlock(message)
            self._move_to_dead_letter(entity, message, reason, description)

    def renew(self, token: uuid.UUID) -> int:
        """A fresh lock duration from now; the new locked-until time (ms since the epoch)."""
        with self._lock:
            entity, message = self._held(token)
            message.locked_until_ms = now_ms() + int(entity.lock_duration * 1000)
            return message.locked_until_ms

    def expire_locks(self) -> None:
        with self._lock:
            self._expire(now_ms())

    # --- browsing ---------------------------------------------------------------------------

    def peek(self, path: str, from_sequence_number: int, count: int) -> list[Message]:
        entity = self.entity(path)
        with self._lock:
            self._expire(now_ms())
            found = [m for s, m in entity.messages.items() if s >= from_sequence_number]
            return [_copy(m) for m in found[: max(count, 0)]]

    def count(self, path: str) -> int:
        entity = self.entity(path)
        with self._lock:
            return len(entity.messages)

    # --- internals (hold self._lock) --------------------------------------------------------

    def _held(self, token: uuid.UUID) -> tuple[Entity, Message]:
        self._expire(now_ms())
        held = self._locks.get(token)
        if held is None:
            raise LockLost(
                "The lock supplied is invalid. Either the lock expired, or the message has "
                "already been removed from the queue."
            )
        return held

    def _unlock(self, message: Message) -> None:
        if message.lock_token is not None:
            self._locks.pop(message.lock_token, None)
        message.lock_token = None
        message.locked_until_ms = 0

    def _expire(self, now: int) -> None:
        expired = [(e, m) for e, m in self._locks.values() if m.locked_until_ms <= now]
        for entity, message in expired:
            self._unlock(message)
            self._after_failed_delivery(entity, message)

    def _after_failed_delivery(self, entity: Entity, message: Message) -> None:
        limit = entity.max_delivery_count
        if limit is not None and message.delivery_count >= limit:
            self._move_to_dead_letter(
                entity, message, MAX_DELIVERY_COUNT_EXCEEDED, MAX_DELIVERY_COUNT_DESCRIPTION
            )

    def _move_to_dead_letter(
        self, entity: Entity, message: Message, reason: str | None, description: str | None
    ) -> None:
        dead = entity.dead_letter
        if dead is None:
            raise NotAllowed("a message cannot be dead-lettered from a dead-letter queue")
        del entity.messages[message.sequence_number]
        message.dead_letter_reason = reason
        message.dead_letter_description = description
        message.dead_letter_source = entity.path
        # The message keeps its sequence number in the dead-letter queue.
        dead.messages[message.sequence_number] = message
        dead.messages = dict(sorted(dead.messages.items()))


def _copy(message: Message) -> Message:
    return Message(
        payload=message.payload,
        sequence_number=message.sequence_number,
        enqueued_time_ms=message.enqueued_time_ms,
        delivery_count=message.delivery_count,
        lock_token=message.lock_token,
        locked_until_ms=message.locked_until_ms,
        dead_letter_reason=message.dead_letter_reason,
        dead_letter_description=message.dead_letter_description,
        dead_letter_source=message.dead_letter_source,
    )
