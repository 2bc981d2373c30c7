"""Replay: what the transports gave up on goes through the same path as live traffic, once.

Sources: Event Grid's dead-letter blobs (each a JSON array of events, with Event Grid's
`deadLetterReason` and friends beside each event's own fields), the submission queue's
dead-lettered messages, and the ledger's rejected messages and events. Every item is fed to
`Bridge.handle`, `Bridge.reject_event` or `Bridge.submit`, exactly as the webhook and the queue
trigger would, so replaying twice, or replaying what reconciliation already routed, changes nothing.
`dry_run` says what each item would do and changes nothing at all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from bridge.contracts import Submission
from bridge.errors import BridgeError, InvalidEvent, TransientError
from bridge.events import (
    JobEvent,
    Malformed,
    ModelEvent,
    ResourceWriteEvent,
    parse_events,
)
from bridge.ledger import JobState
from bridge.service import Bridge

log = logging.getLogger("bridge.replay")

Kind = Literal["events", "submission"]
_FINISHED = {JobState.COMPLETED, JobState.FAILED, JobState.CANCELED, JobState.REJECTED}


@dataclass(frozen=True)
class Item:
    """One thing to replay: a dead-letter blob, a dead-lettered message, a rejected row."""

    source: str
    key: str
    kind: Kind
    body: bytes
    message_id: str | None = None  # a submission's message id, as its queue gave it
    done: Callable[[], None] | None = None  # removes it from its source once replayed
    traceparent: str | None = None  # the sender's trace, as the message's property carried it


@dataclass(frozen=True)
class Line:
    source: str
    key: str
    subject: str  # the event id or the message id
    result: str  # handled, duplicate, ignored, rejected, created, retry, or "would ..." (dry run)
    detail: str


class Replayer:
    def __init__(self, bridge: Bridge, *, dry_run: bool = False) -> None:
        self.bridge = bridge
        self.dry_run = dry_run

    def replay(self, items: Iterable[Item]) -> list[Line]:
        lines: list[Line] = []
        for item in items:
            found = list(self._item(item))
            lines += found
            if item.done and not self.dry_run and all(x.result != "retry" for x in found):
                item.done()
        return lines

    def _item(self, item: Item) -> Iterator[Line]:
        if item.kind == "submission":
            yield self._submission(item)
            return
        try:
            parsed = parse_events(item.body)
        except InvalidEvent as exc:
            yield Line(item.source, item.key, "-", "rejected", f"no event in it: {exc}")
            return
        for event in parsed:
            yield self._event(item, event)

    def _event(self, item: Item, event: object) -> Line:
        def line(subject: str, result: str, detail: str) -> Line:
            return Line(item.source, item.key, subject, result, detail)

        try:
            if isinstance(event, Malformed):
                if self.dry_run:
                    return line(event.id or "-", "would record", event.reason)
                report = self.bridge.reject_event(event.id, event.reason, event.raw)
                return line(event.id or "-", report.result.value, report.detail)
            if isinstance(event, ModelEvent | ResourceWriteEvent):
                if self.dry_run:
                    return line(event.id, "would read", "the resource it names, from Azure ML")
                report = self.bridge.receive(event)
                return line(event.id, report.result.value, report.detail)
            if not isinstance(event, JobEvent):
                return line(getattr(event, "id", "-"), "ignored", "not an Azure ML run event")
            if self.dry_run:
                return line(event.id, *self._preview(event))
            report = self.bridge.handle(event)
            return line(event.id, report.result.value, report.detail)
        except TransientError as exc:
            return line(getattr(event, "id", "-") or "-", "retry", str(exc))
        except BridgeError as exc:
            return line(getattr(event, "id", "-") or "-", "rejected", str(exc))

    def _preview(self, event: JobEvent) -> tuple[str, str]:
        """What `Bridge.handle` would do with the event, read from the ledger only."""
        if event.outcome is None:
            return "ignored", f"status {event.status} is not terminal"
        record = self.bridge.record_of(event.job_name)
        if record is None:
            return "ignored", "not submitted by the bridge"
        why = self.bridge.distrust(event, record)
        if why:
            return "ignored", why
        if record.state in _FINISHED:
            return "duplicate", f"already {record.state}"
        done = len(self.bridge.ledger.effects(record.name))
        return "would route", f"{event.outcome.value} of {record.name} ({done} effect(s) on record)"

    def _submission(self, item: Item) -> Line:
        message_id = item.message_id or item.key

        def line(result: str, detail: str) -> Line:
            return Line(item.source, item.key, message_id, result, detail)

        try:
            if self.dry_run:
                return line(*self._preview_submission(item.body))
            report = self.bridge.submit(item.body, message_id, item.traceparent)
            return line(report.result.value, report.detail)
        except TransientError as exc:
            return line("retry", str(exc))
        except BridgeError as exc:
            return line("rejected", str(exc))

    def _preview_submission(self, body: bytes) -> tuple[str, str]:
        try:
            submission = Submission.parse(body)
        except BridgeError as exc:
            return "would reject", str(exc)
        violations = self.bridge.policy.violations(submission)
        if violations:
            return "would reject", "policy: " + "; ".join(violations)
        record = self.bridge.ledger.get_job(submission.id)
        if record is not None and record.state is not JobState.ACCEPTED:
            return "duplicate", f"job {submission.id} is {record.state}"
        return "would create", f"job {submission.id}"


def rejected_items(bridge: Bridge) -> Iterator[Item]:
    """The ledger's rejected messages (`event:` rows are events) as items to replay."""
    for row in bridge.ledger.rejected_messages():
        message_id = str(row.get("message_id") or "")
        body = row.get("body") or b""
        body = body if isinstance(body, bytes) else str(body).encode()
        if message_id.startswith("event:"):
            yield Item("rejected", message_id, "events", body)
        else:
            yield Item("rejected", message_id, "submission", body, message_id=message_id)


def summary(lines: list[Line]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in lines:
        counts[line.result] = counts.get(line.result, 0) + 1
    return counts


def as_json(lines: list[Line]) -> str:
    return json.dumps([line.__dict__ for line in lines], indent=2)
