"""Conformance of the local Service Bus: each behaviour through the real `azure-servicebus` client.

What is asserted is what a user of the SDK observes: bodies, message ids, application properties,
sequence numbers, delivery counts, lock times and dead-letter reasons. The Python SDK shows the AMQP
header's delivery count, the number of *previous* attempts: 0 on a first delivery, where .NET's
`DeliveryCount` (and the Functions trigger's) says 1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusReceiver,
    ServiceBusSubQueue,
)
from azure.servicebus.aio import ServiceBusClient as AsyncServiceBusClient
from azure.servicebus.exceptions import ServiceBusError
from proton import Message
from proton.utils import BlockingConnection, LinkDetached

from bridge.local.servicebus import (
    MAX_DELIVERY_COUNT_DESCRIPTION,
    MAX_DELIVERY_COUNT_EXCEEDED,
    LocalServiceBus,
)
from tests.integration.conftest import new_queue

pytestmark = pytest.mark.integration


@pytest.fixture
def client(bus: LocalServiceBus) -> Iterator[ServiceBusClient]:
    with ServiceBusClient.from_connection_string(bus.connection_string) as opened:
        yield opened


def receive(
    receiver: ServiceBusReceiver, count: int, within: float = 5.0
) -> list[ServiceBusReceivedMessage]:
    """Up to `count` messages, waiting at most `within` seconds for them all."""
    received: list[ServiceBusReceivedMessage] = []
    deadline = time.monotonic() + within
    while len(received) < count and (left := deadline - time.monotonic()) > 0:
        received += receiver.receive_messages(
            max_message_count=count - len(received), max_wait_time=max(left, 0.1)
        )
    return received


def properties(message: ServiceBusReceivedMessage) -> dict[str, Any]:
    """Application properties as the user set them (the SDK gives str keys and values as bytes)."""
    decoded: dict[str, Any] = {}
    for key, value in (message.application_properties or {}).items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        decoded[name] = value.decode() if isinstance(value, bytes) else value
    return decoded


class RecordingCredential:
    """A `TokenCredential` as azure-identity's: any token is accepted locally; the test sees that
    the SDK asked for one, which it then puts on $cbs before it may attach."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("local-jwt", int(time.time()) + 3600)


# --- authentication ---------------------------------------------------------------------------


def test_cbs_put_token_from_a_token_credential_authorizes_the_link(bus: LocalServiceBus) -> None:
    queue = new_queue(bus)
    credential = RecordingCredential()
    namespace = f"127.0.0.1:{bus.port}"
    with ServiceBusClient(namespace, credential, use_tls=False) as client:  # type: ignore[arg-type]
        with client.get_queue_sender(queue) as sender:
            sender.send_messages(ServiceBusMessage("by jwt"))
        with client.get_queue_receiver(queue) as receiver:
            assert [str(m) for m in receive(receiver, 1)] == ["by jwt"]
    # The SDK asks for "https://servicebus.azure.net//.default", which Entra ID accepts.
    assert credential.scopes
    assert all(s[0].startswith("https://servicebus.azure.net/") for s in credential.scopes)


def test_a_link_without_put_token_is_refused(bus: LocalServiceBus) -> None:
    """What the SDK never does (it puts a token first), a bare AMQP client shows: no $cbs token,
    no link."""
    queue = new_queue(bus)
    connection = BlockingConnection(f"amqp://127.0.0.1:{bus.port}", timeout=10)
    try:
        with pytest.raises(LinkDetached, match="amqp:unauthorized-access"):
            connection.create_sender(queue).send(Message(body="no token"))
    finally:
        connection.close()


def test_one_queue_per_name_and_an_unknown_queue_is_refused(bus: LocalServiceBus) -> None:
    first, second = new_queue(bus), new_queue(bus)
    with ServiceBusClient.from_connection_string(bus.connection_string, retry_total=0) as client:
        for queue in (first, second):
            with client.get_queue_sender(queue) as sender:
                sender.send_messages(ServiceBusMessage(f"for {queue}"))
        for queue in (first, second):
            with client.get_queue_receiver(queue) as receiver:
                peeked = receiver.peek_messages(max_message_count=10, sequence_number=1)
                assert [str(m) for m in peeked] == [f"for {queue}"]
        # The link is refused with amqp:not-found; the SDK reports a failed send.
        with (
            pytest.raises(ServiceBusError),
            client.get_queue_sender("no-such-queue") as sender,
        ):
            sender.send_messages(ServiceBusMessage("lost"))


# --- send -------------------------------------------------------------------------------------


def test_single_send_keeps_body_message_id_and_application_properties(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    queue = new_queue(bus)
    with client.get_queue_sender(queue) as sender:
        sender.send_messages(
            ServiceBusMessage(
                '{"job": 1}',
                message_id="submission-1",
                content_type="application/json",
                subject="submit",
                application_properties={"submission_id": "s-1", "attempt": 2, "urgent": True},
            )
        )
    with client.get_queue_receiver(queue) as receiver:
        (message,) = receive(receiver, 1)
        assert str(message) == '{"job": 1}'
        assert message.message_id == "submission-1"
        assert message.content_type == "application/json"
        assert message.subject == "submit"
        assert properties(message) == {"submission_id": "s-1", "attempt": 2, "urgent": True}
        assert message.sequence_number == 1
        assert message.enqueued_time_utc is not None
        assert abs(message.enqueued_time_utc - datetime.now(UTC)) < timedelta(seconds=30)
        receiver.complete_message(message)


def test_batch_send_delivers_each_message_with_its_own_id_and_properties(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    queue = new_queue(bus)
    with client.get_queue_sender(queue) as sender:
        batch = sender.create_message_batch()
        for i in range(3):
            batch.add_message(
                ServiceBusMessage(
                    f"body-{i}", message_id=f"id-{i}", application_properties={"i": i}
                )
            )
        sender.send_messages(batch)
        sender.send_messages([ServiceBusMessage("listed-a"), ServiceBusMessage("listed-b")])
    with client.get_queue_receiver(queue) as receiver:
        messages = receive(receiver, 5)
        assert [str(m) for m in messages] == [
            "body-0", "body-1", "body-2", "listed-a", "listed-b"
        ]  # fmt: skip
        assert [m.message_id for m in messages[:3]] == ["id-0", "id-1", "id-2"]
        assert [properties(m) for m in messages[:3]] == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert [m.sequence_number for m in messages] == [1, 2, 3, 4, 5]
        for message in messages:
            receiver.complete_message(message)


# --- peek-lock --------------------------------------------------------------------------------


def test_peek_lock_holds_the_message_for_the_lock_duration(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    queue = new_queue(bus, lock_duration=30)
    with client.get_queue_sender(queue) as sender:
        sender.send_messages(ServiceBusMessage("locked"))
    with client.get_queue_receiver(queue) as first, client.get_queue_receiver(queue) as second:
        (message,) = receive(first, 1)
        assert message.lock_token is not None
        assert message.delivery_count == 0
        assert message.locked_until_utc is not None
        lock = message.locked_until_utc - datetime.now(UTC)
        assert timedelta(seconds=25) < lock <= timedelta(seconds=30)
        assert receive(second, 1, within=0.5) == []  # locked: nobody else gets it
        first.complete_message(message)


def test_an_expired_lock_redelivers_with_delivery_count_plus_one(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    queue = new_queue(bus, lock_duration=1)
    with client.get_queue_sender(queue) as sender:
        sender.send_messages(ServiceBusMessage("slow", message_id="m-slow"))
    with client.get_queue_receiver(queue) as receiver:
        (first,) = receive(receiver, 1)
        assert first.delivery_count == 0
        time.sleep(1.3)  # not settled within the lock duration
        (again,) = receive(receiver, 1)
        assert again.message_id == "m-slow"
        assert again.sequence_number == first.sequence_number
        assert again.lock_token != first.lock_token
        assert again.delivery_count == 1
        receiver.complete_message(again)


def test_renew_message_lock_keeps_the_message_locked(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    queue = new_queue(bus, lock_duration=2)
    with client.get_queue_sender(queue) as sender:
        sender.send_messages(ServiceBusMessage("long job"))
    with client.get_queue_receiver(queue) as receiver:
        (message,) = receive(receiver, 1)
        first_lock = message.locked_until_utc
        assert first_lock is not None
        time.sleep(1.2)
        renewed = receiver.renew_message_lock(message)
        assert renewed - first_lock > timedelta(seconds=1)
        assert message.locked_until_utc == renewed
        time.sleep(1.2)  # past the first lock, within the renewed one
        assert datetime.now(UTC) > first_lock
        # The service still holds the lock: a lost one would fail with MessageLockLostError.
        receiver.complete_message(message)
        assert receiver.peek_messages(max_message_count=10, sequence_number=1) == []


def test_complete_removes_the_message(bus: LocalServiceBus, client: ServiceBusClient) -> None:
    queue = new_queue(bus)
    with client.get_queue_sender(queue) as sender:
        sender.send_messages(ServiceBusMessage("done"))
    with client.get_queue_receiver(queue) as receiver:
        (message,) = receive(receiver, 1)
        receiver.complete_message(message)
        # Peek shows locked messages too: an empty queue means the message is gone.
        assert receiver.peek_messages(max_message_count=10, sequence_number=1) == []


def test_abandon_redelivers_at_once_with_delivery_count_plus_one(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    queue = new_queue(bus)  # a one-minute lock: only the abandon can bring it back in time
    with client.get_queue_sender(queue) as sender:
        sender.send_messages(ServiceBusMessage("retry me", application_properties={"k": "v"}))
    with client.get_queue_receiver(queue) as receiver:
        (message,) = receive(receiver, 1)
        assert message.delivery_count == 0
        receiver.abandon_message(message)
        (again,) = receive(receiver, 1)
        assert str(again) == "retry me"
        assert properties(again) == {"k": "v"}
        assert again.delivery_count == 1
        receiver.abandon_message(again)
        (third,) = receive(receiver, 1)
        assert third.delivery_count == 2
        receiver.complete_message(third)


# --- dead-lettering ---------------------------------------------------------------------------


def test_dead_letter_with_reason_and_description(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    queue = new_queue(bus)
    with client.get_queue_sender(queue) as sender:
        sender.send_messages(
            ServiceBusMessage("poison", message_id="p-1", application_properties={"tenant": "a"})
        )
    with client.get_queue_receiver(queue) as receiver:
        (message,) = receive(receiver, 1)
        receiver.dead_letter_message(
            message, reason="InvalidSubmission", error_description="schema_version missing"
        )
        assert receiver.peek_messages(max_message_count=10, sequence_number=1) == []
    with client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dead:
        (letter,) = receive(dead, 1)
        assert str(letter) == "poison"
        assert letter.message_id == "p-1"
        assert letter.dead_letter_reason == "InvalidSubmission"
        assert letter.dead_letter_error_description == "schema_version missing"
        assert letter.dead_letter_source == queue
        assert properties(letter)["tenant"] == "a"
        dead.complete_message(letter)
        assert dead.peek_messages(max_message_count=10, sequence_number=1) == []


def test_max_delivery_count_moves_the_message_to_the_dead_letter_queue(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    queue = new_queue(bus, lock_duration=1, max_delivery_count=3)
    with client.get_queue_sender(queue) as sender:
        sender.send_messages(ServiceBusMessage("always fails", message_id="f-1"))
    with client.get_queue_receiver(queue) as receiver:
        counts = []
        for attempt in range(2):  # two abandons ...
            (message,) = receive(receiver, 1)
            counts.append(message.delivery_count)
            receiver.abandon_message(message)
            assert attempt < 2
        (last,) = receive(receiver, 1)  # ... and the third delivery's lock expires
        counts.append(last.delivery_count)
        assert counts == [0, 1, 2]
        time.sleep(1.3)
        assert receiver.peek_messages(max_message_count=10, sequence_number=1) == []
    with client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dead:
        (letter,) = receive(dead, 1)
        assert letter.message_id == "f-1"
        assert (
            letter.dead_letter_reason == MAX_DELIVERY_COUNT_EXCEEDED == "MaxDeliveryCountExceeded"
        )
        assert letter.dead_letter_error_description == MAX_DELIVERY_COUNT_DESCRIPTION
        assert letter.dead_letter_source == queue
        dead.complete_message(letter)


# --- duplicate detection ------------------------------------------------------------------------


def test_duplicate_detection_drops_a_resend_of_a_message_id_within_the_window(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    queue = new_queue(bus, duplicate_detection_window=2.0)
    with client.get_queue_sender(queue) as sender:
        sender.send_messages(ServiceBusMessage("first", message_id="d-1"))
        # Accepted, as Service Bus reports it, and dropped: only the id is compared.
        sender.send_messages(ServiceBusMessage("resent, other body", message_id="d-1"))
        batch = sender.create_message_batch()
        batch.add_message(ServiceBusMessage("in a batch", message_id="d-1"))
        batch.add_message(ServiceBusMessage("another id", message_id="d-2"))
        sender.send_messages(batch)
        time.sleep(2.5)  # past the window the id is new again
        sender.send_messages(ServiceBusMessage("after the window", message_id="d-1"))
    with client.get_queue_receiver(queue) as receiver:
        received = receive(receiver, 4, within=3.0)
        assert [(m.message_id, str(m)) for m in received] == [
            ("d-1", "first"), ("d-2", "another id"), ("d-1", "after the window"),
        ]  # fmt: skip
        for message in received:
            receiver.complete_message(message)


def test_without_duplicate_detection_a_resend_is_a_second_message(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    queue = new_queue(bus)
    with client.get_queue_sender(queue) as sender:
        sender.send_messages([ServiceBusMessage("one", message_id="same") for _ in range(2)])
    with client.get_queue_receiver(queue) as receiver:
        received = receive(receiver, 3, within=2.0)
        assert [m.message_id for m in received] == ["same", "same"]
        for message in received:
            receiver.complete_message(message)


# --- browsing and receive modes ---------------------------------------------------------------


def test_peek_shows_active_and_locked_messages_without_locking_them(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    queue = new_queue(bus)
    with client.get_queue_sender(queue) as sender:
        sender.send_messages([ServiceBusMessage(f"m{i}", message_id=f"m{i}") for i in range(3)])
    with client.get_queue_receiver(queue) as receiver, client.get_queue_receiver(queue) as peeker:
        (locked,) = receive(receiver, 1)  # m0 is locked by a receiver
        peeked = peeker.peek_messages(max_message_count=10, sequence_number=1)
        assert [m.message_id for m in peeked] == ["m0", "m1", "m2"]
        assert [m.sequence_number for m in peeked] == [1, 2, 3]
        assert peeker.peek_messages(max_message_count=1, sequence_number=2)[0].message_id == "m1"
        rest = receive(peeker, 2)  # peeking locked nothing
        assert [m.message_id for m in rest] == ["m1", "m2"]
        assert [m.delivery_count for m in rest] == [0, 0]
        for message in [locked, *rest]:
            (receiver if message is locked else peeker).complete_message(message)


def test_receive_and_delete_removes_the_message_on_delivery(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    queue = new_queue(bus, lock_duration=1)
    with client.get_queue_sender(queue) as sender:
        sender.send_messages(ServiceBusMessage("once"))
    mode = ServiceBusReceiveMode.RECEIVE_AND_DELETE
    with client.get_queue_receiver(queue, receive_mode=mode) as receiver:
        (message,) = receive(receiver, 1)
        assert str(message) == "once"
        assert message.lock_token is None
        assert receiver.peek_messages(max_message_count=10, sequence_number=1) == []


# --- the asynchronous client ------------------------------------------------------------------


def test_async_client_sends_receives_abandons_and_completes(bus: LocalServiceBus) -> None:
    queue = new_queue(bus)

    async def scenario() -> list[tuple[str, int | None]]:
        seen: list[tuple[str, int | None]] = []
        async with AsyncServiceBusClient.from_connection_string(bus.connection_string) as client:
            async with client.get_queue_sender(queue) as sender:
                batch = await sender.create_message_batch()
                batch.add_message(ServiceBusMessage("a1", message_id="a1"))
                batch.add_message(ServiceBusMessage("a2", message_id="a2"))
                await sender.send_messages(batch)
            async with client.get_queue_receiver(queue) as receiver:
                deadline = time.monotonic() + 10
                while len(seen) < 3 and time.monotonic() < deadline:
                    for message in await receiver.receive_messages(
                        max_message_count=2, max_wait_time=2
                    ):
                        seen.append((str(message), message.delivery_count))
                        if str(message) == "a1" and message.delivery_count == 0:
                            await receiver.abandon_message(message)
                        else:
                            await receiver.complete_message(message)
        return seen

    seen = asyncio.run(scenario())
    assert sorted(seen) == [("a1", 0), ("a1", 1), ("a2", 0)]
