"""The audit trail's core: W3C trace context, spans, call and decision records, the JSON format."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge import audit
from bridge.audit import Audit, Decision, JsonFormatter, TraceContext
from bridge.errors import TransientError

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"  # the W3C spec's example


class Kept:
    """A `keep` that stores what it is given (and can be told to fail, as a storage outage)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.spans: list[tuple[str, list[dict[str, Any]]]] = []
        self.fail = fail

    def __call__(self, job: str, entries: list[dict[str, Any]]) -> None:
        if self.fail:
            raise TransientError("ledger: could not keep audit records")
        self.spans.append((job, entries))


def test_traceparent_of_the_w3c_example_parses_and_prints_back() -> None:
    parsed = TraceContext.parse(VALID)
    assert parsed == TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01")
    assert parsed.traceparent == VALID


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        "",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # upper case is invalid
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # an unknown version
        VALID + "-extra",
    ],
)
def test_anything_but_a_valid_traceparent_is_no_context(value: object) -> None:
    assert TraceContext.parse(value) is None


@given(st.text(max_size=80))
def test_parsing_arbitrary_text_never_raises(text: str) -> None:
    parsed = TraceContext.parse(text)
    assert parsed is None or parsed.traceparent == text.strip()


def test_a_child_keeps_the_trace_and_gets_a_span_of_its_own() -> None:
    parent = TraceContext.new()
    child = parent.child()
    assert child.trace_id == parent.trace_id and child.span_id != parent.span_id
    assert TraceContext.parse(child.traceparent) == child


def test_a_span_continues_its_parent_and_tags_every_record_with_the_trace() -> None:
    kept = Kept()
    parent = TraceContext.parse(VALID)
    with Audit(keep=kept).span("submit", parent=parent, job="job-1") as span:
        audit.decide(Decision.ACCEPTED, "accepted", message_id="m1")
        with audit.call("airflow", "create_asset_event", "x://a", "user bridge") as call:
            call.status = 200
        assert audit.current_traceparent() == span.context.traceparent
    assert audit.current() is None
    assert span.context.trace_id == parent.trace_id and span.context.span_id != parent.span_id
    [(job, entries)] = kept.spans
    assert job == "job-1"
    assert [entry["record"] for entry in entries] == ["decision", "call"]
    assert {entry["trace_id"] for entry in entries} == {parent.trace_id}
    assert {entry["span_id"] for entry in entries} == {span.context.span_id}
    decision, call_entry = entries
    assert decision["decision"] == "accepted" and decision["message_id"] == "m1"
    assert call_entry["status"] == 200 and call_entry["identity"] == "user bridge"
    assert call_entry["latency_ms"] >= 0 and call_entry["target"] == "x://a"


def test_without_a_parent_a_span_starts_a_new_trace() -> None:
    with Audit().span("event", parent=None, job="j") as first, Audit().span(
        "event", parent=None, job="j"
    ) as second:
        pass
    assert first.context.trace_id != second.context.trace_id


def test_a_failed_call_is_recorded_with_its_error_and_the_span_end_says_why() -> None:
    kept = Kept()
    with (
        pytest.raises(TransientError),
        Audit(keep=kept).span("event", parent=None, job="j"),
        audit.call("azureml", "jobs.get", "j", "managed identity 123") as call,
    ):
        call.status = 503
        raise TransientError("Azure ML answered 503")
    [(_, entries)] = kept.spans
    call_entry, end = entries
    assert (call_entry["status"], call_entry["error"]) == (503, "TransientError")
    assert end["record"] == "span-end" and "503" in end["error"]


def test_records_of_an_sdk_call_list_each_request_it_made() -> None:
    kept = Kept()
    with (
        Audit(keep=kept).span("submit", parent=None, job="j"),
        audit.call("azureml", "jobs.create_or_update", "j", "x") as call,
        audit.requests_of(call),
    ):
        audit.note_request("GET", "https://ml/jobs/j?api-version=1", 404)
        audit.note_request("PUT", "https://ml/jobs/j?api-version=1", 201)
    [(_, [entry])] = kept.spans
    assert entry["requests"] == ["GET https://ml/jobs/j 404", "PUT https://ml/jobs/j 201"]
    assert entry["status"] == 201  # the last response is the operation's


def test_a_span_without_a_job_or_records_keeps_nothing() -> None:
    kept = Kept()
    with Audit(keep=kept).span("submit", parent=None):
        audit.decide(Decision.REJECTED, "not JSON", reason="not JSON")
    with Audit(keep=kept).span("reconcile", parent=None, job="j"):
        pass
    assert kept.spans == []


def test_a_keep_that_fails_loses_no_invocation(caplog: pytest.LogCaptureFixture) -> None:
    with Audit(keep=Kept(fail=True)).span("submit", parent=None, job="j"):
        audit.decide(Decision.ACCEPTED, "accepted")
    assert "audit records of j not kept: TransientError" in caplog.text


def test_a_runaway_span_keeps_a_bounded_number_of_records() -> None:
    kept = Kept()
    with Audit(keep=kept).span("reconcile", parent=None, job="j"):
        for _ in range(audit.MAX_ENTRIES + 5):
            audit.decide(Decision.IGNORED, "again")
    [(_, entries)] = kept.spans
    assert len(entries) == audit.MAX_ENTRIES + 1 and entries[-1]["dropped"] == 5


def test_the_json_format_carries_the_audit_fields_and_the_exception_first_line_only() -> None:
    lines: list[str] = []

    class Collect(logging.Handler):  # formats as it emits, inside the span, as handlers do
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("bridge.audit")
    logger.addHandler(handler)
    try:
        with Audit().span("event", parent=TraceContext.parse(VALID), job="j"):
            audit.decide(Decision.REJECTED, "effect failed", reason="HTTP 404")
            try:
                raise ValueError("first line\nsecond line with detail")
            except ValueError:
                logging.getLogger("bridge.audit").exception("boom")
    finally:
        logger.removeHandler(handler)
    decision, failure = (json.loads(line) for line in lines)
    assert decision["level"] == "WARNING" and decision["decision"] == "rejected"
    assert decision["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert decision["reason"] == "HTTP 404" and decision["logger"] == "bridge.audit"
    assert failure["exception"] == "ValueError: first line"
    assert failure["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
