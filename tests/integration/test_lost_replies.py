"""A lost reply never doubles an effect: after any failure that may have happened after Airflow
acted (no reply, a 502 from a gateway), the next attempt asks Airflow before acting again.

A fault proxy sits between the bridge and the real Airflow of the loop stack. Each test has a
bridge of its own (its own ledger table) that reaches Airflow only through the proxy.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Iterator

import pytest

from bridge.composition import build
from bridge.contracts import Outcome, Submission
from bridge.effect_once import hold_for
from bridge.errors import AmbiguousError, TransientError
from bridge.ledger import EffectState, JobRecord, JobState
from bridge.local.faults import Fault, FaultProxy, first_of_each
from bridge.local.stack import Stack
from bridge.service import Bridge, Finding, Result
from tests.integration.conftest import Clock, eventually, job_events

pytestmark = pytest.mark.integration

DONE = "azureml://bridge-tests/loop/completed"
CANCELED = "azureml://bridge-tests/loop/canceled"
POST_EVENTS = ("POST", "/api/v2/assets/events")
TRIGGER = ("POST", "/api/v2/dags/loop_triggered/dagRuns")


@pytest.fixture
def proxy(loop_stack: Stack) -> Iterator[FaultProxy]:
    assert loop_stack.airflow is not None
    with FaultProxy(loop_stack.airflow.base_url) as running:
        yield running


@pytest.fixture
def bridge(loop_stack: Stack, proxy: FaultProxy) -> Bridge:
    settings = dataclasses.replace(
        loop_stack.settings,
        airflow_url=proxy.url,
        ledger_table=f"lost{secrets.token_hex(4)}",
    )
    bridge = build(settings)
    bridge.clock = Clock()
    return bridge


def past_the_hold(bridge: Bridge) -> None:
    """The next delivery, once a request that may have been in flight can no longer commit. These
    faults strike after Airflow committed, so only the bridge's clock need move."""
    assert isinstance(bridge.clock, Clock)
    bridge.clock.advance(bridge.ambiguity_hold + 1)


def finished_job(bridge: Bridge) -> JobRecord:
    """A job the bridge created, as its ledger holds it, with two assets and a DAG run to route."""
    job = Submission.model_validate(
        {
            "origin": {"dag_id": "lost_replies", "run_id": secrets.token_hex(6),
                       "task_id": "submit"},
            "job": {"command": "true", "environment": "azureml:env:1", "compute": "cpu-cluster"},
            "on": {"completed": [DONE, CANCELED]},
            "trigger": {"completed": [{"dag_id": "loop_triggered", "conf": {}}]},
        }
    )  # fmt: skip
    record, _ = bridge.ledger.add_job(JobRecord(job, JobState.CREATED))
    return record


COMPLETED = Finding(Outcome.COMPLETED, "Completed", via="event", event_id="e-1",
                    event_time="2026-11-26T10:00:00.0000000Z")  # fmt: skip


def routed(stack: Stack, record: JobRecord) -> tuple[int, int, int]:
    """Asset events on each route, and triggered runs, that Airflow holds for the job."""
    assert stack.airflow is not None
    runs = [r for r in stack.airflow.runs("loop_triggered") if record.name in r.dag_run_id]
    return (len(job_events(stack, DONE, record.name)),
            len(job_events(stack, CANCELED, record.name)), len(runs))  # fmt: skip


@pytest.mark.parametrize("fault", [Fault.LOSE_REPLY, Fault.GATEWAY_ERROR])
def test_a_lost_reply_is_asked_about_not_posted_again(
    loop_stack: Stack, proxy: FaultProxy, bridge: Bridge, fault: Fault
) -> None:
    record = finished_job(bridge)
    proxy.decide = first_of_each(*POST_EVENTS, fault)

    with pytest.raises(AmbiguousError):
        bridge.conclude(record, COMPLETED)  # Event Grid would retry this delivery
    past_the_hold(bridge)
    assert routed(loop_stack, record) == (1, 1, 1)  # Airflow did act, on both assets
    report = bridge.conclude(record, COMPLETED)

    assert report.result is Result.HANDLED
    assert routed(loop_stack, record) == (1, 1, 1)
    posts = [p for p in proxy.passages if (p.method, p.path) == POST_EVENTS]
    assert len(posts) == 2 and all(p.fault is fault for p in posts)  # none after the check
    states = {e.target: e.state for e in bridge.ledger.effects(record.name)}
    assert set(states.values()) == {EffectState.COMPLETED}


def test_a_request_lost_before_airflow_saw_it_is_posted_after_the_check(
    loop_stack: Stack, proxy: FaultProxy, bridge: Bridge
) -> None:
    record = finished_job(bridge)
    proxy.decide = first_of_each(*POST_EVENTS, Fault.LOSE_REQUEST)

    with pytest.raises(AmbiguousError):
        bridge.conclude(record, COMPLETED)
    assert routed(loop_stack, record)[:2] == (0, 0)
    past_the_hold(bridge)
    bridge.conclude(record, COMPLETED)

    assert routed(loop_stack, record) == (1, 1, 1)


def test_a_lost_reply_to_a_dag_run_trigger_starts_one_run(
    loop_stack: Stack, proxy: FaultProxy, bridge: Bridge
) -> None:
    record = finished_job(bridge)
    proxy.decide = first_of_each(*TRIGGER, Fault.LOSE_REPLY)

    with pytest.raises(AmbiguousError):
        bridge.conclude(record, COMPLETED)
    past_the_hold(bridge)
    bridge.conclude(record, COMPLETED)  # the run id is deterministic: Airflow answers 409

    assert routed(loop_stack, record) == (1, 1, 1)


def test_the_check_itself_failing_keeps_the_attempt_on_record(
    loop_stack: Stack, proxy: FaultProxy, bridge: Bridge
) -> None:
    record = finished_job(bridge)
    proxy.decide = first_of_each(*POST_EVENTS, Fault.LOSE_REPLY)
    with pytest.raises(AmbiguousError):
        bridge.conclude(record, COMPLETED)
    past_the_hold(bridge)

    # Airflow cannot answer the check now (as 3.3.2 does while a run is queued): nothing is posted.
    proxy.decide = lambda method, path, body: (
        Fault.GATEWAY_ERROR if method == "GET" and "/assets/" in path else None
    )
    with pytest.raises(TransientError):
        bridge.conclude(record, COMPLETED)
    assert routed(loop_stack, record)[:2] == (1, 1)

    proxy.decide = lambda method, path, body: None
    bridge.conclude(record, COMPLETED)
    assert routed(loop_stack, record) == (1, 1, 1)


def test_a_request_that_commits_after_the_client_gave_up_still_makes_one_event(
    loop_stack: Stack, proxy: FaultProxy
) -> None:
    """Airflow receives the POST and commits it only after the bridge's client timed out. A
    takeover at once would ask Airflow, find nothing, and post again; the claim stays unusable
    until the request can no longer commit (its timeout plus a margin), so it asks afterwards."""
    settings = dataclasses.replace(
        loop_stack.settings,
        airflow_url=proxy.url,
        ledger_table=f"late{secrets.token_hex(4)}",
        airflow_timeout_seconds=1.0,
    )
    bridge = build(settings)
    assert bridge.ambiguity_hold == hold_for(1.0) == 6.0
    record = finished_job(bridge)
    proxy.late_by = 2.5
    proxy.decide = first_of_each(*POST_EVENTS, Fault.COMMIT_LATE)

    with pytest.raises(AmbiguousError, match="may have been done"):
        bridge.conclude(record, COMPLETED)
    gave_up = time.monotonic()  # each claim is held from its own timeout, the last one's now
    with pytest.raises(TransientError, match="in progress elsewhere"):
        bridge.conclude(record, COMPLETED)  # the redelivery that comes at once
    eventually(lambda: routed(loop_stack, record) == (1, 1, 1), timeout=30, what="late commits")
    time.sleep(max(0.0, gave_up + bridge.ambiguity_hold + 0.5 - time.monotonic()))
    report = bridge.conclude(record, COMPLETED)

    assert report.result is Result.HANDLED
    assert routed(loop_stack, record) == (1, 1, 1)
    posts = [p for p in proxy.passages if (p.method, p.path) == POST_EVENTS]
    assert len(posts) == 2 and all(p.fault is Fault.COMMIT_LATE for p in posts)
