"""The local submission queue's dead letters (`<queue>-poison`, where the dev host moves a message
after ten deliveries, as Service Bus moves it to its dead-letter queue), as items for `bridge
replay`. A message is deleted once it is replayed."""

from __future__ import annotations

import functools
from collections.abc import Iterator

from azure.storage.queue import QueueClient

from bridge.provider.senders import QueueEnvelope
from bridge.replay import Item

SOURCE = "poison-queue"


def poison_items(connection_string: str, queue_name: str, *, peek: bool = False) -> Iterator[Item]:
    """Each message, held invisible while it is replayed; with `peek` (a dry run) only looked at,
    so that it stays where it is, visible."""
    poison = QueueClient.from_connection_string(connection_string, f"{queue_name}-poison")
    with poison:
        messages = (
            poison.peek_messages(max_messages=32)
            if peek
            else poison.receive_messages(visibility_timeout=300)
        )
        for message in messages:
            try:
                envelope = QueueEnvelope.decode(message.content)
                body, message_id = envelope.body.encode(), envelope.message_id
            except Exception:  # not even an envelope: the core records it as a rejected message
                body, message_id = str(message.content).encode(), str(message.id)
            done = None if peek else functools.partial(poison.delete_message, message)
            yield Item(SOURCE, str(message.id), "submission", body, message_id, done=done)
