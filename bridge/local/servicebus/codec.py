"""AMQP message sections, as Service Bus reads and writes them, on top of proton's `Data` codec.

A stored message is the encoding its sender sent. Delivering it, the broker replaces the header
(delivery count), adds its message annotations (sequence number, enqueued time, locked-until) and,
for a dead-lettered message, the DeadLetterReason and DeadLetterErrorDescription application
properties, as the Service Bus AMQP protocol guide maps them
(https://learn.microsoft.com/azure/service-bus-messaging/service-bus-amqp-protocol-guide, "Message
annotations"; https://learn.microsoft.com/azure/service-bus-messaging/service-bus-dead-letter-queues).
Properties, application properties and body pass through as sent, byte for byte.

A batch (`ServiceBusMessageBatch`) travels as one AMQP message with message format 0x80013700
whose body is one data section per message, each an encoded message (protocol guide, "Batching").
Proton does not expose the transfer's message format, so a batch is recognised by its shape: a body
of data sections only, each of which is itself a well-formed AMQP message.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proton import Array, Data, Described, symbol, timestamp, uint, ulong

from bridge.local.servicebus.broker import Message

HEADER = 0x70
DELIVERY_ANNOTATIONS = 0x71
MESSAGE_ANNOTATIONS = 0x72
PROPERTIES = 0x73
APPLICATION_PROPERTIES = 0x74
DATA = 0x75
AMQP_SEQUENCE = 0x76
AMQP_VALUE = 0x77
FOOTER = 0x78
_BODY = (DATA, AMQP_SEQUENCE, AMQP_VALUE)


class MalformedMessage(ValueError):
    """Bytes that are not a sequence of AMQP message sections."""


@dataclass(frozen=True)
class Section:
    code: int
    raw: bytes  # the whole described section, as encoded


def split(encoded: bytes) -> list[Section]:
    """The sections of an encoded message, in order, each with its raw bytes."""
    sections: list[Section] = []
    offset = 0
    while offset < len(encoded):
        data = Data()
        try:
            consumed = data.decode(encoded[offset:])
        except Exception as exc:  # proton raises DataException subclasses
            raise MalformedMessage(str(exc)) from exc
        if consumed <= 0:
            raise MalformedMessage("no progress decoding a section")
        data.rewind()
        data.next()
        value = data.get_object()
        if not isinstance(value, Described) or not isinstance(value.descriptor, int):
            raise MalformedMessage("a message section is not a described value")
        sections.append(Section(int(value.descriptor), encoded[offset : offset + consumed]))
        offset += consumed
    return sections


def _owned(value: Any) -> Any:
    """The value with every binary copied out of proton's buffer (it returns memoryviews into
    memory that goes with the `Data` object)."""
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, dict):
        return type(value)({_owned(k): _owned(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_owned(v) for v in value]
    if isinstance(value, Described):
        return Described(_owned(value.descriptor), _owned(value.value))
    if isinstance(value, Array):
        return Array(value.descriptor, value.type, *[_owned(e) for e in value.elements])
    return value


def section_value(section: Section) -> Any:
    data = Data()
    data.decode(section.raw)
    data.rewind()
    data.next()
    value = _owned(data.get_object())
    if not isinstance(value, Described):
        raise MalformedMessage("a message section is not a described value")
    return value.value


def encode_section(code: int, value: Any) -> bytes:
    data = Data()
    data.put_object(Described(ulong(code), value))
    return data.encode()


def _is_message(encoded: bytes) -> bool:
    try:
        codes = [s.code for s in split(encoded)]
    except MalformedMessage:
        return False
    in_order = all(a <= b for a, b in itertools.pairwise(codes))
    known = all(HEADER <= c <= FOOTER for c in codes)
    return bool(codes) and in_order and known and any(c in _BODY for c in codes)


def unbatch(encoded: bytes) -> list[bytes]:
    """The messages a transfer carries: those of a batch, or the transfer's own message."""
    sections = split(encoded)
    body = [s for s in sections if s.code in _BODY]
    if body and all(s.code == DATA for s in body):
        inner = [section_value(s) for s in body]
        if all(isinstance(b, bytes) and _is_message(b) for b in inner):
            return list(inner)
    return [encoded]


def message_id(encoded: bytes) -> str | None:
    """The message-id of the properties section (the first field), as text; None if unset."""
    for section in split(encoded):
        if section.code == PROPERTIES:
            fields = section_value(section)
            value = fields[0] if isinstance(fields, list) and fields else None
            return None if value is None else str(value)
    return None


def for_delivery(message: Message, *, peeked: bool = False) -> bytes:
    """The message as a receiver gets it: the broker's header and annotations, the sender's rest.

    The header's delivery-count is the number of previous attempts (AMQP), one less than Service
    Bus's DeliveryCount while the message is locked by the delivery at hand.
    """
    sections = split(message.payload)
    by_code: dict[int, Section] = {s.code: s for s in sections if s.code not in _BODY}
    body = [s for s in sections if s.code in _BODY]
    out = [
        encode_section(HEADER, _header(by_code.get(HEADER), message)),
        encode_section(
            MESSAGE_ANNOTATIONS, _annotations(by_code.get(MESSAGE_ANNOTATIONS), message, peeked)
        ),
    ]
    if PROPERTIES in by_code:
        out.append(by_code[PROPERTIES].raw)
    application = _application(by_code.get(APPLICATION_PROPERTIES), message)
    if application is not None:
        out.append(application)
    out += [s.raw for s in body]
    if FOOTER in by_code:
        out.append(by_code[FOOTER].raw)
    return b"".join(out)


def _header(sent: Section | None, message: Message) -> list[Any]:
    # durable, priority, ttl, first-acquirer, delivery-count
    header: list[Any] = [None, None, None, None, None]
    value = section_value(sent) if sent is not None else None
    if isinstance(value, list):
        header[: len(value[:5])] = value[:5]
    attempts = message.delivery_count - 1 if message.locked else message.delivery_count
    header[3] = attempts <= 0
    header[4] = uint(max(attempts, 0))
    return header


def _annotations(sent: Section | None, message: Message, peeked: bool) -> dict[Any, Any]:
    annotations: dict[Any, Any] = {}
    value = section_value(sent) if sent is not None else None
    if isinstance(value, Mapping):
        annotations.update(value)
    annotations[symbol("x-opt-sequence-number")] = message.sequence_number
    annotations[symbol("x-opt-enqueued-time")] = timestamp(message.enqueued_time_ms)
    if message.locked_until_ms and not peeked:
        annotations[symbol("x-opt-locked-until")] = timestamp(message.locked_until_ms)
    if message.dead_letter_source is not None:
        annotations[symbol("x-opt-deadletter-source")] = message.dead_letter_source
    return annotations


def _application(sent: Section | None, message: Message) -> bytes | None:
    """The sender's application properties; a dead-lettered message's gain the reason."""
    if message.dead_letter_source is None:
        return sent.raw if sent is not None else None
    properties: dict[Any, Any] = {}
    value = section_value(sent) if sent is not None else None
    if isinstance(value, Mapping):
        properties.update(value)
    if message.dead_letter_reason is not None:
        properties["DeadLetterReason"] = message.dead_letter_reason
    if message.dead_letter_description is not None:
        properties["DeadLetterErrorDescription"] = message.dead_letter_description
    return encode_section(APPLICATION_PROPERTIES, properties)
