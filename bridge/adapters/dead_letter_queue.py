"""The Service Bus submission queue's dead-letter sub-queue, read with `azure-servicebus` and the
operator's identity, as items for `bridge replay`: what Service Bus gave up on after its maximum
delivery count. A message is completed (removed) once it is replayed; a dry run only peeks."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bridge.errors import PermanentError, TransientError
from bridge.replay import Item

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

SOURCE = "servicebus-deadletter"


class ServiceBusDeadLetters:
    def __init__(
        self, namespace: str, queue: str, credential: TokenCredential, **client_options: Any
    ) -> None:
        from azure.servicebus import ServiceBusClient

        self.namespace = namespace
        self.queue = queue
        self._client = ServiceBusClient(namespace, credential, **client_options)

    def items(self, *, peek: bool = False, max_wait_time: float = 5.0) -> Iterator[Item]:
        from azure.servicebus import ServiceBusSubQueue
        from azure.servicebus import exceptions as sb

        try:
            with self._client.get_queue_receiver(
                self.queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=max_wait_time
            ) as receiver:
                messages = receiver.peek_messages(max_message_count=250) if peek else receiver
                for message in messages:
                    body = b"".join(bytes(part) for part in message.body)
                    message_id = str(message.message_id or message.sequence_number)
                    done = None if peek else functools.partial(receiver.complete_message, message)
                    yield Item(SOURCE, message_id, "submission", body, message_id, done=done)
        except (sb.ServiceBusAuthorizationError, sb.MessagingEntityNotFoundError) as exc:
            raise PermanentError(
                f"cannot read the dead letters of {self.queue!r} in {self.namespace}: "
                f"{type(exc).__name__} (the operator needs 'Azure Service Bus Data Receiver')"
            ) from exc
        except sb.ServiceBusError as exc:
            raise TransientError(
                f"Service Bus {self.namespace} unavailable: {type(exc).__name__}"
            ) from exc

    def close(self) -> None:
        self._client.close()
