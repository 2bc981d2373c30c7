"""Event Grid delivery to a plain HTTP endpoint, independent of the web framework serving it.

Handles both handshakes (Event Grid's SubscriptionValidation, CloudEvents' OPTIONS) and
deliveries in both schemas. The handshakes and input validation need no backend: the bridge is
only built (by `bridge_factory`) once a delivery holds a run event. Status codes follow Event
Grid's retry rules: 400 is never retried, so it is kept for a body that holds no event object at
all; each event is judged alone, and an unreadable one is recorded with its reason while the rest
of its batch goes on. 503 is retried. A body over 1 MiB (Event Grid's own limit for an event, and
for a batch) is refused with 413, and one that says it is neither JSON nor CloudEvents with 415:
neither is retried, and neither reaches the parser. With a `Gate` (Event Grid's secure webhook
delivery: an Entra ID bearer token, `bridge.adapters.entra`), a request it refuses gets 401 before
anything else is read, and 503 when the gate cannot judge.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.errors import BridgeError, ConfigurationError, InvalidEvent, TransientError
from bridge.events import (
    Ignored,
    JobEvent,
    Malformed,
    ModelEvent,
    Parsed,
    ResourceWriteEvent,
    SecretEvent,
    Validation,
    distinct_writes,
    parse_events,
)
from bridge.service import Bridge

log = logging.getLogger("bridge.webhook")

MAX_BODY_BYTES = 1024 * 1024
# What Event Grid sends: its own schema as JSON, CloudEvents 1.0 structured or batched.
CONTENT_TYPES = frozenset(
    {"application/json", "application/cloudevents+json", "application/cloudevents-batch+json"}
)


class Gate(Protocol):
    """Who may deliver: a check of the `Authorization` header."""

    def refusal(self, authorization: str | None) -> str | None:
        """Why the request is refused, or None; `TransientError` when it cannot tell now."""
        ...


@dataclass(frozen=True)
class Reply:
    status: int
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def content(self) -> bytes:
        return json.dumps(self.body).encode() if self.body is not None else b""


def answer(
    method: str,
    headers: Mapping[str, str],
    body: bytes,
    bridge_factory: Callable[[], Bridge],
    gate: Gate | None = None,
) -> Reply:
    lowered = {key.lower(): value for key, value in headers.items()}
    if gate is not None:
        refused = admission(gate, lowered.get("authorization"))
        if refused is not None:
            return refused
    if method.upper() == "OPTIONS":
        return _cloudevents_handshake(lowered)
    if method.upper() != "POST":
        return Reply(405, {"error": f"method {method} is not allowed: POST or OPTIONS"})
    refused = refusal(lowered.get("content-type"), len(body))
    if refused is not None:
        log.warning("delivery refused: %s", refused.body)
        return refused
    try:
        parsed = parse_events(body)
    except InvalidEvent as exc:
        log.warning("malformed delivery: %s", exc)
        return Reply(400, {"error": str(exc)})
    for item in parsed:
        if isinstance(item, Validation):
            return Reply(200, {"validationResponse": item.code})
    return _deliver(parsed, bridge_factory)


def admission(gate: Gate, authorization: str | None) -> Reply | None:
    """401 (Event Grid does not retry it) for a caller the gate refuses, 503 when it cannot tell."""
    try:
        why = gate.refusal(authorization)
    except TransientError as exc:
        log.warning("delivery not judged: %s", exc)
        return Reply(503, {"error": str(exc)})
    if why is None:
        return None
    log.warning("delivery unauthorized: %s", why)
    challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    return Reply(401, {"error": f"unauthorized: {why}"}, challenge)


def refusal(content_type: str | None, length: int) -> Reply | None:
    """413 or 415 for a delivery the bridge will not read, or None. No Content-Type is read as
    JSON: Event Grid always sends one, and the parser judges the body either way."""
    if length > MAX_BODY_BYTES:
        return Reply(413, {"error": f"body of {length} bytes is over the {MAX_BODY_BYTES} allowed"})
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media not in CONTENT_TYPES:
        allowed = ", ".join(sorted(CONTENT_TYPES))
        return Reply(415, {"error": f"content type {media!r} is not one of {allowed}"})
    return None


def _cloudevents_handshake(headers: Mapping[str, str]) -> Reply:
    origin = headers.get("webhook-request-origin")
    if not origin:
        return Reply(400, {"error": "OPTIONS without a WebHook-Request-Origin header"})
    return Reply(200, None, {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"})


def _deliver(parsed: list[Parsed | Malformed], bridge_factory: Callable[[], Bridge]) -> Reply:
    writes = [item for item in parsed if isinstance(item, ResourceWriteEvent)]
    kept = distinct_writes(writes)  # one read per operation and resource
    events: list[JobEvent | ModelEvent | ResourceWriteEvent | SecretEvent] = [
        item for item in parsed if isinstance(item, JobEvent | ModelEvent | SecretEvent)
    ] + kept
    malformed = [item for item in parsed if isinstance(item, Malformed)]
    results: list[dict[str, Any]] = [
        {"id": item.id, "result": "ignored", "detail": item.reason}
        for item in parsed
        if isinstance(item, Ignored)
    ] + [
        {"id": item.id, "result": "duplicate", "detail": "another event of the same operation"}
        for item in writes
        if item not in kept
    ]
    if not events and not malformed:
        return Reply(200, {"results": results})
    try:
        bridge = bridge_factory()
    except ConfigurationError as exc:
        log.error("bridge is misconfigured: %s", exc)
        return Reply(500, {"error": f"bridge is misconfigured: {exc}"})
    retry: TransientError | None = None
    judged: list[Malformed | JobEvent | ModelEvent | ResourceWriteEvent | SecretEvent] = [
        *malformed,
        *events,
    ]
    for item in judged:
        try:
            if isinstance(item, Malformed):
                report = bridge.reject_event(item.id, item.reason, item.raw)
            else:
                report = bridge.receive(item)
            results.append({"id": item.id, "result": report.result.value, "detail": report.detail})
        except TransientError as exc:
            log.warning("event %s will be retried: %s", item.id, exc)
            retry = retry or exc
            results.append({"id": item.id, "result": "retry", "detail": str(exc)})
        except BridgeError as exc:
            log.error("event %s rejected: %s", item.id, exc)
            results.append({"id": item.id, "result": "rejected", "detail": str(exc)})
    if retry is not None:
        after = {"Retry-After": str(round(retry.retry_after))} if retry.retry_after else {}
        return Reply(503, {"error": str(retry), "results": results}, after)
    return Reply(200, {"results": results})
