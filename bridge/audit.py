"""The audit trail: one structured record per outside call and per decision, tied by trace context.

Every invocation of the bridge (a submission, an event, one job's reconciliation) is a *span* in a
W3C trace. The operator starts the trace and puts its `traceparent` on the submission; the bridge
continues it, tags the Azure ML job with its own span's `traceparent`, continues it again when the
job's event (or reconciliation) comes back, and hands it to Airflow in the asset event's `extra`
and the DAG run's `conf`. So one trace id is the correlation id of a job's whole trail, from the
DAG run that submitted it to the DAG runs it started.

Two kinds of record, both logged as JSON through the `bridge.audit` logger:

- a *call*: system (`azureml`, `airflow`), operation, target, HTTP status, latency, and the
  identity used (a client id or a user name; never a token or a password);
- a *decision*: `accepted`, `rejected` (with the reason), `created`, `event-received`,
  `effect-performed`, `duplicate-skipped`, `reconciled`, `ignored`.

A span's records are also kept, at its end, where `bridge show JOB` reads them (the ledger), so an
operator sees each call with its time and result without a log query. Pure: the standard library
only. OpenTelemetry, when configured, comes in through `Spans` (`bridge.adapters.telemetry`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from bridge.errors import first_line

log = logging.getLogger("bridge.audit")

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
ATTRIBUTE_PREFIX = "audit."
MAX_ENTRIES = 200  # per span: a runaway loop cannot grow a ledger row without bound


@dataclass(frozen=True)
class TraceContext:
    """A W3C trace context (www.w3.org/TR/trace-context): the trace and the current span."""

    trace_id: str
    span_id: str
    flags: str = "01"

    @classmethod
    def parse(cls, value: object) -> TraceContext | None:
        """A `traceparent` header value, or None for anything else (never an error: a bad
        traceparent costs the trace, not the submission)."""
        if not isinstance(value, str):
            return None
        match = TRACEPARENT.fullmatch(value.strip())
        if match is None:
            return None
        trace_id, span_id, flags = match.groups()
        if trace_id == "0" * 32 or span_id == "0" * 16:
            return None  # all-zero ids are invalid by the spec
        return cls(trace_id, span_id, flags)

    @staticmethod
    def of_message(properties: Mapping[Any, Any] | None) -> str | None:
        """The `traceparent` application property of a queue message, as text (the Service Bus
        SDK gives keys and values as bytes or str), or None."""
        for key, value in (properties or {}).items():
            name = key.decode(errors="replace") if isinstance(key, bytes) else key
            if name == "traceparent":
                text = value.decode(errors="replace") if isinstance(value, bytes) else value
                return text if isinstance(text, str) else None
        return None

    @classmethod
    def new(cls) -> TraceContext:
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    def child(self) -> TraceContext:
        return TraceContext(self.trace_id, secrets.token_hex(8), self.flags)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


class Decision(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CREATED = "created"
    EVENT_RECEIVED = "event-received"
    EFFECT_PERFORMED = "effect-performed"
    DUPLICATE_SKIPPED = "duplicate-skipped"
    RECONCILED = "reconciled"
    IGNORED = "ignored"
    BLOCKED = "blocked"  # waits on an operator's fix; retried with backoff until the deadline
    DEFERRED = "deferred"  # Azure ML refused for now: the sweep resumes it, no redelivery
    REDRIVEN = "redriven"  # an operator's `bridge retry`
    ROTATED = "rotated"  # the signing key: a new version is current (bridge.rotation)


class OpenSpan(Protocol):
    context: TraceContext

    def end(self, error: str | None) -> None: ...


class Spans(Protocol):
    """Where spans go besides the log: nowhere (`LocalSpans`), or OpenTelemetry."""

    def start(
        self, name: str, parent: TraceContext | None, attributes: Mapping[str, str]
    ) -> OpenSpan: ...


@dataclass
class _LocalSpan:
    context: TraceContext

    def end(self, error: str | None) -> None:
        pass


class LocalSpans:
    """Span ids made here; the JSON log is the only record."""

    def start(
        self, name: str, parent: TraceContext | None, attributes: Mapping[str, str]
    ) -> OpenSpan:
        return _LocalSpan(parent.child() if parent else TraceContext.new())


@dataclass
class Span:
    """One invocation of the bridge, and the records it made."""

    operation: str
    context: TraceContext
    job: str | None
    entries: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    kept: int = 0  # entries already kept by a ledger write they rode on (`keep_with`)

    def add(self, entry: dict[str, Any]) -> None:
        if len(self.entries) < MAX_ENTRIES:
            self.entries.append(entry)
        else:
            self.dropped += 1

    def keep_with(self, job: str) -> list[dict[str, Any]] | None:
        """The records not kept yet, for a write of the job's that keeps them (so that the span
        needs no write of its own at its end); None if the span is not the job's. Call `kept_by`
        once that write is done."""
        if job != self.job or len(self.entries) == self.kept:
            return None
        return self.entries[self.kept :]

    def kept_by(self, records: list[dict[str, Any]] | None) -> None:
        """The write that carried `records` (from `keep_with`) is done."""
        if records:
            self.kept += len(records)


@dataclass
class Call:
    """An outside call in progress; the adapter sets `status` (the HTTP status it got)."""

    status: int | None = None
    requests: list[str] = field(default_factory=list)  # "GET /path 200", for SDKs that make several


_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("bridge_span", default=None)

Keep = Callable[[str, list[dict[str, Any]]], None]


class Audit:
    """Opens spans around the bridge's invocations and keeps their records: `keep(job, entries)`."""

    def __init__(self, *, spans: Spans | None = None, keep: Keep | None = None) -> None:
        self.spans = spans or LocalSpans()
        self.keep = keep

    @contextmanager
    def span(
        self,
        operation: str,
        *,
        parent: TraceContext | None,
        job: str | None = None,
        **attributes: str,
    ) -> Iterator[Span]:
        opened = self.spans.start(operation, parent, {"job": job or "", **attributes})
        span = Span(operation, opened.context, job)
        token = _current.set(span)
        error: str | None = None
        try:
            yield span
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            _current.reset(token)
            opened.end(error)
            self._keep(span, error)

    def _keep(self, span: Span, error: str | None) -> None:
        if self.keep is None or span.job is None or not span.entries:
            return
        entries = span.entries[span.kept :]  # the rest rode on a ledger write already
        if error or span.dropped:
            entries = [
                *entries,
                _entry("span-end", span, {"error": error, "dropped": span.dropped}),
            ]
        if not entries:
            return
        try:
            self.keep(span.job, entries)
        except Exception as exc:  # the log holds the same records: losing this copy loses nothing
            log.warning("audit records of %s not kept: %s", span.job, type(exc).__name__)


def current() -> Span | None:
    return _current.get()


def current_traceparent() -> str | None:
    span = _current.get()
    return span.context.traceparent if span else None


def decide(decision: Decision, summary: str, **fields: Any) -> None:
    """Record a decision of the current span (or, outside any span, just log it)."""
    span = _current.get()
    entry = _entry("decision", span, {"decision": decision.value, **fields})
    if span is not None:
        span.add(entry)
    level = logging.WARNING if decision is Decision.REJECTED else logging.INFO
    log.log(level, "%s: %s", decision.value, summary, extra=_attributes(entry))


@contextmanager
def call(system: str, operation: str, target: str, identity: str) -> Iterator[Call]:
    """Time one outside call and record it, whether it returns or raises."""
    handle = Call()
    started = time.perf_counter()
    error: str | None = None
    try:
        yield handle
    except BaseException as exc:
        error = type(exc).__name__
        raise
    finally:
        latency = round((time.perf_counter() - started) * 1000, 1)
        span = _current.get()
        fields: dict[str, Any] = {
            "system": system,
            "operation": operation,
            "target": target,
            "status": handle.status,
            "latency_ms": latency,
            "identity": identity,
        }
        if handle.requests:
            fields["requests"] = handle.requests
        if error:
            fields["error"] = error
        entry = _entry("call", span, fields)
        if span is not None:
            span.add(entry)
        log.info(
            "%s %s %s: %s in %.1f ms", system, operation, target,
            handle.status if handle.status is not None else error, latency,
            extra=_attributes(entry),
        )  # fmt: skip


def note_request(method: str, url: str, status: int) -> None:
    """One HTTP request of the call in progress (for an SDK that makes several per operation)."""
    handle = _calls.get()
    if handle is not None:
        handle.requests.append(f"{method} {url.split('?', maxsplit=1)[0]} {status}")
        handle.status = status


_calls: contextvars.ContextVar[Call | None] = contextvars.ContextVar("bridge_call", default=None)


@contextmanager
def requests_of(handle: Call) -> Iterator[None]:
    """Route `note_request` to this call while the SDK works."""
    token = _calls.set(handle)
    try:
        yield
    finally:
        _calls.reset(token)


def _entry(kind: str, span: Span | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "record": kind,
    }
    if span is not None:
        entry |= {
            "trace_id": span.context.trace_id,
            "span_id": span.context.span_id,
            "span": span.operation,
            "job": span.job,
        }
    return entry | {key: value for key, value in fields.items() if value is not None}


def _attributes(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The record's fields as log record attributes, one each (`audit.status`, ...): strings,
    numbers and lists of strings, which OpenTelemetry exports as Application Insights' custom
    dimensions and `JsonFormatter` gathers back."""
    return {f"{ATTRIBUTE_PREFIX}{key}": value for key, value in entry.items() if key != "time"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the audit fields if any, the
    current trace ids, and the exception's type and first line (never its locals)."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = {
            key.removeprefix(ATTRIBUTE_PREFIX): value
            for key, value in vars(record).items()
            if key.startswith(ATTRIBUTE_PREFIX)
        }
        if fields:
            body |= fields
        else:
            span = _current.get()
            if span is not None:
                body |= {"trace_id": span.context.trace_id, "span_id": span.context.span_id}
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            body["exception"] = f"{type(exc).__name__}: {first_line(exc)}"
        return json.dumps(body, default=str)
