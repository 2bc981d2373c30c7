"""The Service Bus submission queue's dead-letter sub-queue, read with `azure-servicebus` and the
operator's identity, as items for `bridge replay`: what Service Bus gave up on after its maximum
delivery count. A message is completed (removed) once it is replayed; a dry run only peeks.

It reads the connection the Function App's trigger reads: in Azure
`BRIDGE_SERVICEBUS__fullyQualifiedNamespace` with the identity; locally `BRIDGE_SERVICEBUS`, a
development emulator's connection string (`UseDevelopmentEmulator=true`; any other connection
string is refused, since it would hold a key).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from bridge.audit import TraceContext
from bridge.errors import ConfigurationError, PermanentError, TransientError
from bridge.replay import Item
from bridge.settings import SERVICEBUS_CONNECTION, SUBMISSION_QUEUE

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.servicebus import (
        ServiceBusClient,
        ServiceBusReceivedMessage,
        ServiceBusReceiver,
    )

SOURCE = "servicebus-deadletter"
LOCK_RENEWAL_SECONDS = 600.0  # a replay that takes longer than this is redelivered, not lost
PEEK_PAGE = 250
log = logging.getLogger("bridge.replay")


class ServiceBusDeadLetters:
    def __init__(self, client: ServiceBusClient, namespace: str, queue: str) -> None:
        self.namespace = namespace
        self.queue = queue
        self._client = client

    @classmethod
    def with_identity(
        cls, namespace: str, queue: str, credential: TokenCredential, **client_options: Any
    ) -> ServiceBusDeadLetters:
        from azure.servicebus import ServiceBusClient

        return cls(ServiceBusClient(namespace, credential, **client_options), namespace, queue)

    @classmethod
    def from_environment(
        cls, env: Mapping[str, str], managed_identity_client_id: str | None = None
    ) -> ServiceBusDeadLetters | None:
        """The dead letters of the queue the Function App's trigger reads, or None when no
        Service Bus connection is configured."""
        queue = env.get(SUBMISSION_QUEUE, "").strip() or "submissions"
        namespace = env.get(f"{SERVICEBUS_CONNECTION}__fullyQualifiedNamespace", "").strip()
        if namespace:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential(
                managed_identity_client_id=managed_identity_client_id
            )
            return cls.with_identity(namespace, queue, credential)
        connection_string = env.get(SERVICEBUS_CONNECTION, "").strip()
        if not connection_string:
            return None
        fields = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
        if fields.get("UseDevelopmentEmulator", "").lower() != "true":
            raise ConfigurationError(
                f"{SERVICEBUS_CONNECTION} is a connection string with a key: in Azure, set "
                f"{SERVICEBUS_CONNECTION}__fullyQualifiedNamespace and use an identity; only a "
                "development emulator's connection string (UseDevelopmentEmulator=true) is read"
            )
        from azure.servicebus import ServiceBusClient

        client = ServiceBusClient.from_connection_string(connection_string)
        return cls(client, fields.get("Endpoint", "the emulator"), queue)

    def items(self, *, peek: bool = False, max_wait_time: float = 5.0) -> Iterator[Item]:
        """Each dead-lettered message, locked (and its lock renewed) while it is replayed; with
        `peek`, all of them, page by page, locking nothing. The client is closed at the end."""
        from azure.servicebus import AutoLockRenewer, ServiceBusSubQueue
        from azure.servicebus import exceptions as sb

        renewer = AutoLockRenewer(max_lock_renewal_duration=LOCK_RENEWAL_SECONDS)
        try:
            with self._client.get_queue_receiver(
                self.queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=max_wait_time
            ) as receiver:
                messages = _peeked(receiver) if peek else receiver
                for message in messages:
                    if not peek:
                        renewer.register(receiver, message)
                    body = b"".join(bytes(part) for part in message.body)
                    message_id = str(message.message_id or message.sequence_number)
                    done = None if peek else functools.partial(_complete, receiver, message)
                    yield Item(SOURCE, message_id, "submission", body, message_id, done=done,
                               traceparent=TraceContext.of_message(
                                   message.application_properties))  # fmt: skip
        except (sb.ServiceBusAuthorizationError, sb.MessagingEntityNotFoundError) as exc:
            raise PermanentError(
                f"cannot read the dead letters of {self.queue!r} in {self.namespace}: "
                f"{type(exc).__name__} (the operator needs 'Azure Service Bus Data Receiver')"
            ) from exc
        except sb.ServiceBusAuthenticationError as exc:
            if getattr(exc.inner_exception, "status_code", None) == 404:  # no such queue
                raise PermanentError(
                    f"{self.queue!r} does not exist in {self.namespace}: check "
                    "BRIDGE_SUBMISSION_QUEUE"
                ) from exc
            raise TransientError(
                f"Service Bus {self.namespace} refused the token for now: {type(exc).__name__}"
            ) from exc
        except sb.ServiceBusError as exc:
            raise TransientError(
                f"Service Bus {self.namespace} unavailable: {type(exc).__name__}"
            ) from exc
        finally:
            renewer.close()
            self._client.close()

    def close(self) -> None:
        self._client.close()


def _peeked(receiver: ServiceBusReceiver) -> Iterator[ServiceBusReceivedMessage]:
    """Every message, peeked a page at a time from the first sequence number on."""
    after = 0
    while page := receiver.peek_messages(max_message_count=PEEK_PAGE, sequence_number=after + 1):
        yield from page
        after = max(message.sequence_number or after for message in page)


def _complete(receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage) -> None:
    """Remove a replayed message. If its lock was lost it comes back, and the next replay finds
    its submission a duplicate: nothing is lost or done twice."""
    from azure.servicebus import exceptions as sb

    try:
        receiver.complete_message(message)
    except sb.ServiceBusError as exc:
        log.warning("dead letter %s replayed but not removed: %s", message.message_id, exc)
