"""The AMQP 1.0 side of the local Service Bus, on python-qpid-proton's reactor, in one thread.

What a Service Bus client does on the wire, and what this peer answers, each as Microsoft documents
it:
- Authentication is claims-based (CBS): the client attaches a request/response link pair to the
  `$cbs` node and sends a `put-token` request (application properties `operation`, `type`, `name`
  = the audience, `expiration`); the service answers with `status-code` 202
  (https://learn.microsoft.com/azure/service-bus-messaging/service-bus-amqp-protocol-guide,
  "Claims-based authorization"). Any token is accepted here, but a link to an entity, or to its
  `$management` node, is refused with `amqp:unauthorized-access` on a connection that has not put
  a token for an audience covering that entity.
- Sending: a transfer to the entity's address; the service settles it with `accepted` once the
  message is stored. A batch is one transfer whose data sections are the messages (same guide,
  "Batching"; see `codec.py`).
- Receiving: in peek-lock mode the service sends each message unsettled, with the lock token as the
  delivery tag (a GUID) and the message annotations `x-opt-sequence-number`,
  `x-opt-enqueued-time` and `x-opt-locked-until` (same guide, "Message annotations" and
  "Receive"). The client settles with a disposition: `accepted` completes, `modified` abandons
  (`modified` with undeliverable-here defers), `rejected` with condition
  `com.microsoft:dead-letter` dead-letters (reason and description in the error's info),
  `released` returns the message uncounted
  (https://learn.microsoft.com/azure/service-bus-messaging/message-transfers-locks-settlement).
  The client waits for the service to settle the disposition, echoing the outcome it applied; a
  settlement with a lost lock is answered `rejected` with `com.microsoft:message-lock-lost`.
  A receiver attached with sender-settle-mode `settled` receives and deletes.
- Management requests go to `<entity>/$management`: `com.microsoft:renew-lock`,
  `com.microsoft:peek-message` and `com.microsoft:update-disposition`, each answered with
  `statusCode` and `statusDescription`
  (https://learn.microsoft.com/azure/service-bus-messaging/service-bus-amqp-request-response).
  A lost lock is status 410 with `errorCondition` `com.microsoft:message-lock-lost`.
- A link to an entity that does not exist is refused with `amqp:not-found`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from proton import (
    Array,
    Condition,
    Connection,
    Data,
    Delivery,
    Disposition,
    Endpoint,
    Event,
    Handler,
    Link,
    Message,
    Receiver,
    Sender,
    int32,
    symbol,
    timestamp,
)
from proton._reactor import Acceptor
from proton.reactor import Container

from bridge.local.servicebus import codec
from bridge.local.servicebus.broker import (
    EntityNotFound,
    LockLost,
    Namespace,
    NotAllowed,
)

log = logging.getLogger("bridge.local.servicebus")


class _ClientGone(logging.Filter):
    """proton's reactor logs an error when a socket write or read fails because the client has
    already gone (it closes the transport either way). For a broker that is routine: a client
    process exiting, or a receiver closing while the peer answers it. Such records go to debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(("Couldn't send:", "Couldn't recv:")) and any(
            gone in message for gone in ("BrokenPipeError", "ConnectionResetError")
        ):
            log.debug("proton: %s", message)
            return False
        return True


logging.getLogger("proton").addFilter(_ClientGone())

CBS_NODE = "$cbs"
MANAGEMENT_SUFFIX = "/$management"
LOCK_LOST = "com.microsoft:message-lock-lost"
DEAD_LETTER_CONDITION = "com.microsoft:dead-letter"
NOT_FOUND = "amqp:not-found"
UNAUTHORIZED = "amqp:unauthorized-access"
NOT_IMPLEMENTED = "amqp:not-implemented"
NOT_ALLOWED = "amqp:not-allowed"
MESSAGE_SIZE_EXCEEDED = "amqp:link:message-size-exceeded"
INTERNAL_ERROR = "amqp:internal-error"
# Service Bus Standard's largest message, which the service announces on the sender's link
# (https://learn.microsoft.com/azure/service-bus-messaging/service-bus-quotas).
MAX_MESSAGE_SIZE = 256 * 1024
INCOMING_CREDIT = 100
TICK_SECONDS = 0.05  # lock expiry and stop requests are noticed within this
_UPDATE_DISPOSITION_STATUS = {"completed", "abandoned", "suspended", "defered"}
_OUTCOMES = (Delivery.ACCEPTED, Delivery.MODIFIED, Delivery.REJECTED, Delivery.RELEASED)


def node_path(address: str | None) -> str:
    """`amqps://host:port/queue` or `queue` -> `queue` (without slashes at either end)."""
    if not address:
        return ""
    if "://" in address:
        address = urlsplit(address).path
    return address.strip("/")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(mapping: Any, key: str) -> Any:
    """A map entry whose key may have been sent as a string, a symbol or binary."""
    if not isinstance(mapping, dict):
        return None
    for k, v in mapping.items():
        if _text(k) == key:
            return v
    return None


def _error(condition: str, description: str) -> Condition:
    """An AMQP error for a rejected delivery, with the tracking id Service Bus puts in `info`: the
    Python SDK reads the rejected outcome's error as a full three-field list (an error without
    info fails its callback and the send waits for its timeout)."""
    return Condition(
        condition, description, {symbol("com.microsoft:tracking-id"): str(uuid.uuid4())}
    )


def _condition_of(exc: Exception) -> str:
    if isinstance(exc, LockLost):
        return LOCK_LOST
    return NOT_IMPLEMENTED if isinstance(exc, NotImplementedError) else NOT_ALLOWED


def _uuids(value: Any) -> list[uuid.UUID]:
    elements = value.elements if isinstance(value, Array) else value
    if not isinstance(elements, list | tuple):
        return []
    return [e if isinstance(e, uuid.UUID) else uuid.UUID(_text(e)) for e in elements]


@dataclass
class _Consumer:
    """A link on which the peer sends an entity's messages to a receiving client."""

    link: Sender
    entity: str
    receive_and_delete: bool
    tokens: dict[Delivery, uuid.UUID] = field(default_factory=dict)


@dataclass
class _Reply:
    status: int
    description: str
    body: Any = None
    condition: str | None = None


class Peer(Handler):
    """The reactor's handler: one per local Service Bus, serving every connection."""

    def __init__(self, namespace: Namespace) -> None:
        super().__init__()
        self.namespace = namespace
        self.container = Container(self)
        self.acceptor: Acceptor | None = None
        self._stopping = threading.Event()
        self._consumers: dict[Sender, _Consumer] = {}
        self._audiences: dict[Connection, set[str]] = {}
        self._connections: set[Connection] = set()

    # --- lifecycle (called from the owning thread before and after `run`) -------------------

    def listen(self, host: str, port: int) -> None:
        self.acceptor = self.container.listen(f"{host}:{port}")

    def run(self) -> None:
        self.container.run()

    def request_stop(self) -> None:
        self._stopping.set()

    # --- reactor events ---------------------------------------------------------------------

    def on_reactor_init(self, event: Event) -> None:
        self.container.schedule(TICK_SECONDS, self)

    def on_timer_task(self, event: Event) -> None:
        if self._stopping.is_set():
            self._shut_down()
            return
        with self._guard("tick"):
            self.namespace.expire_locks()
            for consumer in list(self._consumers.values()):
                self._pump(consumer)
        self.container.schedule(TICK_SECONDS, self)

    def on_connection_remote_open(self, event: Event) -> None:
        connection = event.connection
        if connection is None:
            return
        self._connections.add(connection)
        self._audiences.setdefault(connection, set())
        if connection.state & Endpoint.LOCAL_UNINIT:
            connection.open()

    def on_connection_remote_close(self, event: Event) -> None:
        if event.connection is not None:
            event.connection.close()
            self._forget(event.connection)

    def on_transport_closed(self, event: Event) -> None:
        if event.connection is not None:
            self._forget(event.connection)

    def on_session_remote_open(self, event: Event) -> None:
        session = event.session
        if session is not None and session.state & Endpoint.LOCAL_UNINIT:
            session.open()

    def on_session_remote_close(self, event: Event) -> None:
        if event.session is not None:
            event.session.close()

    def on_link_remote_open(self, event: Event) -> None:
        link = event.link
        if link is None or not link.state & Endpoint.LOCAL_UNINIT:
            return
        with self._guard("attach"):
            self._attach(link)

    def on_link_remote_close(self, event: Event) -> None:
        link = event.link
        if link is None:
            return
        if isinstance(link, Sender):
            self._consumers.pop(link, None)
        link.close()

    def on_link_flow(self, event: Event) -> None:
        link = event.link
        if isinstance(link, Sender) and link in self._consumers:
            with self._guard("flow"):
                self._pump(self._consumers[link])

    def on_delivery(self, event: Event) -> None:
        delivery, link = event.delivery, event.link
        if delivery is None or link is None:
            return
        with self._guard("delivery"):
            if isinstance(link, Receiver):
                self._incoming(link, delivery)
            elif isinstance(link, Sender) and link in self._consumers:
                self._settlement(self._consumers[link], delivery)
            elif delivery.settled:
                delivery.settle()

    # --- links ------------------------------------------------------------------------------

    def _attach(self, link: Link) -> None:
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        if isinstance(link, Receiver):
            node = node_path(link.remote_target.address)
            link.max_message_size = MAX_MESSAGE_SIZE
        else:
            node = node_path(link.remote_source.address)
        if node == CBS_NODE:
            self._open(link)
            return
        management = node.lower().endswith(MANAGEMENT_SUFFIX)
        entity = node[: -len(MANAGEMENT_SUFFIX)] if management else node
        if not self.namespace.has_entity(entity):
            self._refuse(link, NOT_FOUND, f"The messaging entity '{entity}' could not be found.")
            return
        if not self._authorized(link.connection, entity):
            self._refuse(link, UNAUTHORIZED, f"No token was put on $cbs for '{entity}'.")
            return
        self._open(link)
        if isinstance(link, Sender) and not management:
            presettled = link.remote_snd_settle_mode == Link.SND_SETTLED
            consumer = _Consumer(link, entity, receive_and_delete=presettled)
            self._consumers[link] = consumer
            self._pump(consumer)

    def _open(self, link: Link) -> None:
        link.open()
        if isinstance(link, Receiver):
            link.flow(INCOMING_CREDIT)

    def _refuse(self, link: Link, condition: str, description: str) -> None:
        # AMQP answers an attach before it detaches: the client sees the detach's error.
        link.open()
        link.condition = Condition(condition, description)
        link.close()

    def _authorized(self, connection: Connection, entity: str) -> bool:
        entity = entity.lower()
        for audience in self._audiences.get(connection, set()):
            if audience in ("", entity) or entity.startswith(audience + "/"):
                return True
        return False

    # --- transfers from clients -------------------------------------------------------------

    def _incoming(self, link: Receiver, delivery: Delivery) -> None:
        if not delivery.readable or delivery.partial:
            if delivery.settled:
                delivery.settle()
            return
        payload = link.recv(delivery.pending) or b""
        link.advance()
        if link.credit < INCOMING_CREDIT // 2:
            link.flow(INCOMING_CREDIT - link.credit)
        node = node_path(link.remote_target.address)
        if node == CBS_NODE:
            connection = link.connection
            self._respond(link, payload, lambda r: self._put_token(connection, r), cbs=True)
        elif node.lower().endswith(MANAGEMENT_SUFFIX):
            entity = node[: -len(MANAGEMENT_SUFFIX)]
            self._respond(link, payload, lambda request: self._manage(entity, request))
        else:
            self._enqueue(node, delivery, payload)
            return
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()

    def _enqueue(self, entity: str, delivery: Delivery, payload: bytes) -> None:
        if len(payload) > MAX_MESSAGE_SIZE:
            # Standard tier's limit; Service Bus rejects the transfer with this condition
            # (https://learn.microsoft.com/azure/service-bus-messaging/service-bus-amqp-troubleshoot).
            delivery.local.condition = _error(
                MESSAGE_SIZE_EXCEEDED,
                f"The received message ({len(payload)} bytes) exceeds the limit "
                f"({MAX_MESSAGE_SIZE} bytes) currently allowed on the link.",
            )
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            return
        try:
            messages = codec.unbatch(payload)
            ids = [codec.message_id(message) for message in messages]
            self.namespace.enqueue(entity, messages, message_ids=ids)
        except (codec.MalformedMessage, EntityNotFound, NotAllowed) as exc:
            delivery.local.condition = _error(NOT_ALLOWED, str(exc))
            delivery.update(Delivery.REJECTED)
        else:
            delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        for consumer in list(self._consumers.values()):
            if consumer.entity.lower() == entity.lower():
                self._pump(consumer)

    def _respond(
        self,
        link: Receiver,
        payload: bytes,
        handle: Callable[[Message], _Reply],
        *,
        cbs: bool = False,
    ) -> None:
        request = Message()
        request.decode(payload)
        try:
            reply = handle(request)
        except (EntityNotFound, NotAllowed) as exc:
            reply = _Reply(404 if isinstance(exc, EntityNotFound) else 400, str(exc))
        except LockLost as exc:
            reply = _Reply(410, str(exc), condition=LOCK_LOST)
        status_key, description_key = (
            ("status-code", "status-description") if cbs else ("statusCode", "statusDescription")
        )
        properties: dict[str, Any] = {
            status_key: int32(reply.status),
            description_key: reply.description,
        }
        if reply.condition is not None:
            properties["errorCondition"] = reply.condition
        response = Message(body=reply.body, correlation_id=request.id, properties=properties)
        node = node_path(link.remote_target.address)
        replies = self._reply_link(link.connection, node, request.reply_to)
        if replies is None:
            log.warning("no reply link for %s on this connection; response dropped", node)
            return
        out = replies.delivery(str(uuid.uuid4()))
        replies.stream(response.encode())
        replies.advance()
        out.settle()

    def _reply_link(self, connection: Connection, node: str, reply_to: str | None) -> Sender | None:
        wanted = {node.lower()}
        if reply_to:
            wanted.add(node_path(reply_to).lower())
        link = connection.link_head(Endpoint.LOCAL_ACTIVE | Endpoint.REMOTE_ACTIVE)
        while link is not None:
            if isinstance(link, Sender) and (
                node_path(link.remote_source.address).lower() in wanted
                or node_path(link.remote_target.address).lower() in wanted
            ):
                return link
            link = link.next(Endpoint.LOCAL_ACTIVE | Endpoint.REMOTE_ACTIVE)
        return None

    def _put_token(self, connection: Connection, request: Message) -> _Reply:
        properties: dict[str, Any] = request.properties or {}
        if _text(properties.get("operation", "")) != "put-token":
            return _Reply(400, "Only put-token is supported on $cbs.")
        audience = node_path(_text(properties.get("name", ""))).lower()
        entity = audience.removesuffix(MANAGEMENT_SUFFIX.lower())
        if entity and not self.namespace.has_entity(entity):
            # Service Bus refuses the token of an entity that does not exist with a 404
            # (Azure/azure-service-bus#304, #451), before any link is attached.
            raise EntityNotFound(f"The messaging entity '{entity}' could not be found.")
        self._audiences.setdefault(connection, set()).add(audience)
        return _Reply(202, "Accepted")

    # --- management requests ----------------------------------------------------------------

    def _manage(self, entity: str, request: Message) -> _Reply:
        properties: dict[str, Any] = request.properties or {}
        operation = _text(properties.get("operation", ""))
        body = request.body
        if operation == "com.microsoft:renew-lock":
            tokens = _uuids(_field(body, "lock-tokens"))
            expirations = [timestamp(self.namespace.renew(t)) for t in tokens]
            return _Reply(
                200, "OK", {"expirations": Array(Data.NULL, Data.TIMESTAMP, *expirations)}
            )
        if operation == "com.microsoft:peek-message":
            start = int(_field(body, "from-sequence-number") or 0)
            count = int(_field(body, "message-count") or 1)
            found = self.namespace.peek(entity, start, count)
            if not found:
                return _Reply(204, "No Content")
            messages = [{"message": codec.for_delivery(m, peeked=True)} for m in found]
            return _Reply(200, "OK", {"messages": messages})
        if operation == "com.microsoft:update-disposition":
            status = _text(_field(body, "disposition-status") or "")
            if status not in _UPDATE_DISPOSITION_STATUS or status == "defered":
                return _Reply(
                    501,
                    f"disposition {status!r} is not supported locally",
                    condition=NOT_IMPLEMENTED,
                )
            for token in _uuids(_field(body, "lock-tokens")):
                if status == "completed":
                    self.namespace.complete(token)
                elif status == "abandoned":
                    self.namespace.abandon(token)
                else:
                    reason = _field(body, "deadletter-reason")
                    description = _field(body, "deadletter-description")
                    self.namespace.dead_letter(
                        token,
                        _text(reason) if reason is not None else None,
                        _text(description) if description is not None else None,
                    )
            return _Reply(200, "OK")
        return _Reply(
            501, f"operation {operation!r} is not supported locally", condition=NOT_IMPLEMENTED
        )

    # --- deliveries to clients --------------------------------------------------------------

    def _pump(self, consumer: _Consumer) -> None:
        link = consumer.link
        if not (link.state & Endpoint.LOCAL_ACTIVE and link.state & Endpoint.REMOTE_ACTIVE):
            return
        while link.credit > 0:
            taken = (
                self.namespace.take_next(consumer.entity)
                if consumer.receive_and_delete
                else self.namespace.lock_next(consumer.entity)
            )
            if taken is None:
                break
            delivery = link.delivery(cast(str, taken.lock_token.bytes_le))
            link.stream(codec.for_delivery(taken.message))
            link.advance()
            if consumer.receive_and_delete:
                delivery.settle()
            else:
                consumer.tokens[delivery] = taken.lock_token
        if link.drain_mode:
            link.drained()

    def _settlement(self, consumer: _Consumer, delivery: Delivery) -> None:
        token = consumer.tokens.get(delivery)
        state = delivery.remote_state
        if token is None or state not in _OUTCOMES:
            if delivery.settled:
                consumer.tokens.pop(delivery, None)
                delivery.settle()
            return
        del consumer.tokens[delivery]
        remote = delivery.remote
        try:
            self._apply(token, state, remote)
        except (LockLost, NotAllowed, NotImplementedError) as exc:
            delivery.local.condition = _error(_condition_of(exc), str(exc))
            delivery.update(Delivery.REJECTED)
        else:
            # Echo the outcome applied: the SDK checks it against what it asked for.
            if state == Delivery.MODIFIED:
                delivery.local.failed = remote.failed
                delivery.local.undeliverable = remote.undeliverable
            delivery.update(state)
        delivery.settle()
        if state in (Delivery.MODIFIED, Delivery.RELEASED):
            for other in list(self._consumers.values()):
                if other.entity.lower() == consumer.entity.lower():
                    self._pump(other)

    def _apply(self, token: uuid.UUID, state: Any, remote: Disposition) -> None:
        if state == Delivery.ACCEPTED:
            self.namespace.complete(token)
        elif state == Delivery.RELEASED:
            self.namespace.release(token)
        elif state == Delivery.MODIFIED and remote.undeliverable:
            raise NotImplementedError("defer is not supported locally")
        elif state == Delivery.MODIFIED:
            self.namespace.abandon(token)
        else:
            reason, description = self._dead_letter_details(remote.condition)
            self.namespace.dead_letter(token, reason, description)

    @staticmethod
    def _dead_letter_details(condition: Condition | None) -> tuple[str | None, str | None]:
        if condition is None:
            return None, None
        info = condition.info if isinstance(condition.info, dict) else {}
        reason = _field(info, "DeadLetterReason")
        description = _field(info, "DeadLetterErrorDescription")
        if description is None:
            description = condition.description
        return (
            _text(reason) if reason is not None else None,
            _text(description) if description is not None else None,
        )

    # --- housekeeping -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception:
            log.exception("local Service Bus: %s failed", what)

    def _forget(self, connection: Connection) -> None:
        self._connections.discard(connection)
        self._audiences.pop(connection, None)
        for link, consumer in list(self._consumers.items()):
            if link.connection == connection:
                del self._consumers[consumer.link]

    def _shut_down(self) -> None:
        """First close every connection (a Close frame each), then, a tick later, their sockets:
        a client must see the service gone, not a silent peer."""
        if self.acceptor is not None:
            self.acceptor.close()
            self.acceptor = None
            self._consumers.clear()
            for connection in list(self._connections):
                with contextlib.suppress(Exception):
                    connection.close()
            self.container.schedule(TICK_SECONDS, self)
            return
        for connection in list(self._connections):
            transport = connection.transport
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.close_tail()
                    transport.close_head()
        self._connections.clear()
        self.container.stop()
