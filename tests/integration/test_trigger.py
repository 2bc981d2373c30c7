"""The Functions Service Bus trigger's semantics, as the dev host reproduces them (`bridge.local.
trigger.ServiceBusTrigger`), through the real `azure-servicebus` SDK against the local Service Bus.

The handler is a plain function of the test that records each delivery: what the trigger does with
its return or its exception (complete, abandon, renew the lock, dead-letter after the queue's max
delivery count) is observed through the SDK and the broker, never by replacing any of it. The
Python SDK's `delivery_count` is the number of *previous* deliveries: 0 on the first.

Last, the running stack's submission queue and trigger are the ones `infra/` and `host.json`
deploy (tests/infra/test_queue_settings.py keeps those readers honest).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusSubQueue,
)

from bridge.local.servicebus import (
    DEAD_LETTER_SUFFIX,
    MAX_DELIVERY_COUNT_DESCRIPTION,
    MAX_DELIVERY_COUNT_EXCEEDED,
    LocalServiceBus,
)
from bridge.local.stack import Stack
from bridge.local.trigger import QueueOptions, ServiceBusTrigger, TriggerOptions
from tests.integration.conftest import eventually, new_queue

pytestmark = pytest.mark.integration


def options(**changes: object) -> TriggerOptions:
    """host.json's trigger, with a test's changes (fewer calls, shorter renewal)."""
    return dataclasses.replace(TriggerOptions.from_host_json(), **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Call:
    """One invocation of the handler, as it saw it."""

    message_id: str | None
    delivery_count: int | None
    started: float  # time.monotonic()
    ended: float
    locked_until_at_start: datetime | None
    locked_until_at_end: datetime | None
    raised: bool


class Handler:
    """The function the trigger calls: sleeps `seconds(message)`, then raises if `fails(message)`.
    Records every call, and how many ran at once."""

    def __init__(
        self,
        *,
        seconds: Callable[[ServiceBusReceivedMessage], float] = lambda m: 0.0,
        fails: Callable[[ServiceBusReceivedMessage], bool] = lambda m: False,
    ) -> None:
        self.seconds = seconds
        self.fails = fails
        self.calls: list[Call] = []
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, message: ServiceBusReceivedMessage) -> None:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        started, lock_at_start = time.monotonic(), message.locked_until_utc
        fails = self.fails(message)
        try:
            time.sleep(self.seconds(message))
            if fails:
                raise RuntimeError(f"handler failed on delivery {message.delivery_count}")
        finally:
            call = Call(
                message.message_id, message.delivery_count, started, time.monotonic(),
                lock_at_start, message.locked_until_utc, fails,
            )  # fmt: skip
            with self._lock:
                self.running -= 1
                self.calls.append(call)


@contextmanager
def triggered(
    bus: LocalServiceBus, queue: str, handle: Handler, trigger: TriggerOptions
) -> Iterator[ServiceBusTrigger]:
    """The trigger running on `queue` with its own client, as the dev host runs it."""
    stopping = threading.Event()
    with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        running = ServiceBusTrigger(client, queue, handle, trigger, stopping)
        running.start()
        try:
            yield running
        finally:
            stopping.set()
            running.join(timeout=10)


def send(bus: LocalServiceBus, queue: str, *ids: str) -> None:
    with (
        ServiceBusClient.from_connection_string(bus.connection_string) as client,
        client.get_queue_sender(queue) as sender,
    ):
        sender.send_messages([ServiceBusMessage(f"body of {i}", message_id=i) for i in ids])


def peek(
    bus: LocalServiceBus, queue: str, *, dead: bool = False
) -> list[ServiceBusReceivedMessage]:
    """Every message in the queue (or its dead-letter sub-queue), locked ones included."""
    sub_queue = ServiceBusSubQueue.DEAD_LETTER if dead else None
    with (
        ServiceBusClient.from_connection_string(bus.connection_string) as client,
        client.get_queue_receiver(queue, sub_queue=sub_queue) as receiver,
    ):
        return list(receiver.peek_messages(max_message_count=100, sequence_number=1))


def settled(bus: LocalServiceBus, queue: str, timeout: float = 10) -> None:
    """The queue empty: every message completed (as the SDK's peek, which shows locked messages
    too, then confirms)."""
    eventually(lambda: bus.namespace.count(queue) == 0 or None, timeout, what=f"{queue} empty")
    assert peek(bus, queue) == []


# --- complete and abandon ---------------------------------------------------------------------


def test_a_message_is_completed_when_the_handler_returns(bus: LocalServiceBus) -> None:
    queue = new_queue(bus)
    handle = Handler()
    with triggered(bus, queue, handle, options(max_concurrent_calls=2)):
        send(bus, queue, "ok-1")
        settled(bus, queue)
        time.sleep(1.5)  # a completed message never comes back
    assert [(c.message_id, c.delivery_count, c.raised) for c in handle.calls] == [
        ("ok-1", 0, False)
    ]
    assert peek(bus, queue, dead=True) == []


def test_a_message_is_abandoned_when_the_handler_raises_and_redelivered_at_once(
    bus: LocalServiceBus,
) -> None:
    queue = new_queue(bus)  # a one-minute lock: only an abandon brings the message back in time
    handle = Handler(fails=lambda m: m.delivery_count == 0)
    with triggered(bus, queue, handle, options(max_concurrent_calls=1)):
        send(bus, queue, "flaky-1")
        settled(bus, queue)
    first, second = handle.calls
    assert (first.message_id, first.delivery_count, first.raised) == ("flaky-1", 0, True)
    assert (second.message_id, second.delivery_count, second.raised) == ("flaky-1", 1, False)
    assert second.started - first.ended < 5  # at once, not after the lock's minute
    assert peek(bus, queue, dead=True) == []


def test_a_message_that_always_fails_is_dead_lettered_after_max_delivery_count(
    bus: LocalServiceBus,
) -> None:
    queue = new_queue(bus, max_delivery_count=3)
    handle = Handler(fails=lambda m: True)
    with triggered(bus, queue, handle, options(max_concurrent_calls=2)):
        send(bus, queue, "poison-1")
        [letter] = eventually(lambda: peek(bus, queue, dead=True), what="dead-lettered")
        time.sleep(1.5)  # and never delivered again from the queue
    assert [(c.delivery_count, c.raised) for c in handle.calls] == [(0, True), (1, True), (2, True)]
    assert peek(bus, queue) == []
    assert letter.message_id == "poison-1" and str(letter) == "body of poison-1"
    assert letter.dead_letter_reason == MAX_DELIVERY_COUNT_EXCEEDED == "MaxDeliveryCountExceeded"
    assert letter.dead_letter_error_description == MAX_DELIVERY_COUNT_DESCRIPTION
    assert letter.dead_letter_source == queue
    assert letter.delivery_count == 3
    assert bus.namespace.count(queue + DEAD_LETTER_SUFFIX) == 1


# --- lock renewal -----------------------------------------------------------------------------
# The SDK's AutoLockRenewer (azure/servicebus/_common/auto_lock_renewer.py) checks each message
# about every 0.5 s and renews when less than 10 s of the lock are left; for a lock shorter than
# 10.5 s, when less than 0.75 x the whole seconds it had left at registration: 1.5 s for a 3 s
# lock, a second's margin on a loaded machine (a 2 s lock would leave a quarter of one).

LOCK = 3.0


def test_the_lock_is_renewed_while_the_handler_runs_longer_than_the_lock(
    bus: LocalServiceBus,
) -> None:
    queue = new_queue(bus, lock_duration=LOCK)
    handle = Handler(seconds=lambda m: 2.5 * LOCK)
    with triggered(bus, queue, handle, options(max_concurrent_calls=2)):
        send(bus, queue, "slow-1")
        settled(bus, queue, timeout=4 * LOCK)
        time.sleep(LOCK + 1)  # a lost lock would have brought it back to the idle receiver
    [call] = handle.calls
    assert (call.message_id, call.delivery_count, call.raised) == ("slow-1", 0, False)
    assert call.locked_until_at_start is not None and call.locked_until_at_end is not None
    # The lock the SDK holds at the end was renewed past the first one, more than once.
    assert call.locked_until_at_end - call.locked_until_at_start > timedelta(seconds=LOCK)
    assert peek(bus, queue, dead=True) == []


def test_the_lock_is_lost_after_max_auto_lock_renewal_and_the_message_redelivered(
    bus: LocalServiceBus, caplog: pytest.LogCaptureFixture
) -> None:
    queue = new_queue(bus, lock_duration=LOCK)
    renewal = LOCK  # renewed once (at about half the lock), then let go
    handle = Handler(seconds=lambda m: 3 * LOCK if m.delivery_count == 0 else 0.0)
    trigger = options(max_concurrent_calls=2, max_auto_lock_renewal_seconds=renewal)
    with triggered(bus, queue, handle, trigger), caplog.at_level(logging.WARNING, "bridge"):
        send(bus, queue, "too-slow-1")
        eventually(lambda: len(handle.calls) == 2 or None, timeout=6 * LOCK, what="both calls")
        settled(bus, queue)
    slow, again = sorted(handle.calls, key=lambda c: c.started)
    assert (slow.delivery_count, again.delivery_count) == (0, 1)
    # Renewed for a while (past the first lock), then let go: redelivered while the first call
    # still ran. Its completion then failed (the lock was lost); the quick second one completed.
    assert LOCK < again.started - slow.started < renewal + LOCK + 1.0
    assert again.started < slow.ended
    assert any(
        r.getMessage().startswith("could not settle message too-slow-1") for r in caplog.records
    )
    assert peek(bus, queue, dead=True) == []


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.parametrize(("calls", "messages", "rounds"), [(3, 3, 1), (2, 4, 2)])
def test_max_concurrent_calls_handlers_run_at_once(
    bus: LocalServiceBus, calls: int, messages: int, rounds: int
) -> None:
    queue = new_queue(bus)
    seconds = 2.0
    handle = Handler(seconds=lambda m: seconds)
    with triggered(bus, queue, handle, options(max_concurrent_calls=calls)):
        started = time.monotonic()
        send(bus, queue, *(f"parallel-{calls}-{n}" for n in range(messages)))
        eventually(lambda: len(handle.calls) == messages or None, timeout=10 * rounds,
                   what="every message handled")  # fmt: skip
        elapsed = time.monotonic() - started
        settled(bus, queue)
    assert handle.peak == calls
    assert rounds * seconds <= elapsed < (rounds + 0.75) * seconds
    assert sorted(c.delivery_count or 0 for c in handle.calls) == [0] * messages


# --- the running stack ------------------------------------------------------------------------


def test_the_stacks_submission_queue_and_trigger_are_the_deployed_ones(loop_stack: Stack) -> None:
    deployed = QueueOptions.from_bicep()
    queue = loop_stack.servicebus.namespace.entity(loop_stack.queue_name)
    assert (queue.lock_duration, queue.max_delivery_count, queue.duplicate_detection_window) == (
        deployed.lock_duration_seconds, deployed.max_delivery_count,
        deployed.duplicate_detection_window_seconds,
    )  # fmt: skip
    assert (deployed.lock_duration_seconds, deployed.max_delivery_count) == (60.0, 10)
    assert queue.dead_letter is not None
    assert queue.dead_letter.path == f"{loop_stack.queue_name}{DEAD_LETTER_SUFFIX}"
    assert loop_stack.devhost.queue_name == loop_stack.queue_name
    assert loop_stack.devhost.trigger_options == TriggerOptions.from_host_json()
