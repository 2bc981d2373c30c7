"""What a completion costs the ledger, counted at the HTTP boundary: a proxy in front of Azurite
sees every request the bridge's Table client sends (docs/benchmarks.md, "The hot path")."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest

from bridge.composition import build
from bridge.contracts import TAG_SIGNATURE, TAG_SUBMISSION, Submission
from bridge.ledger import EffectState, JobRecord, JobState
from bridge.local.faults import FaultProxy
from bridge.local.stack import Stack
from bridge.service import Bridge
from bridge.webhook import answer
from tests.integration.conftest import job_events, own_ledger
from tests.integration.test_loop import documented_event

pytestmark = pytest.mark.integration

DONE = "azureml://bridge-tests/loop/completed"
HEADERS = {"Content-Type": "application/json", "aeg-event-type": "Notification"}


@pytest.fixture
def proxied(loop_stack: Stack) -> Iterator[tuple[Bridge, FaultProxy]]:
    """A bridge whose ledger is reached through a counting proxy."""
    azurite = loop_stack.azurite
    with FaultProxy(f"http://127.0.0.1:{azurite.table_port}") as proxy:
        connection = azurite.connection_string.replace(
            azurite.table_endpoint, f"{proxy.url}/{azurite.table_endpoint.rsplit('/', 1)[1]}"
        )
        settings = own_ledger(loop_stack, "hot", ledger_connection_string=connection)
        bridge = build(settings)
        yield bridge, proxy
        bridge.ledger.close()


def completion(bridge: Bridge, job: Submission) -> bytes:
    tags = {TAG_SUBMISSION: job.id, TAG_SIGNATURE: bridge.keys.sign(job.id)}
    return json.dumps([documented_event(job.id, "RunStatusChanged", "Completed", tags)]).encode()


def test_a_completion_costs_three_ledger_round_trips(
    loop_stack: Stack, proxied: tuple[Bridge, FaultProxy]
) -> None:
    """Read the job, claim the effect, and after Airflow's reply one write that concludes the
    job, settles the effect and keeps the span's audit records."""
    bridge, proxy = proxied
    job = Submission.model_validate({
        "origin": {"dag_id": "hot_path", "run_id": secrets.token_hex(6), "task_id": "t"},
        "job": {"command": "true", "environment": "azureml:env:1", "compute": "cpu-cluster"},
        "on": {"completed": [DONE]},
    })  # fmt: skip
    bridge.ledger.add_job(JobRecord(job, JobState.CREATED))
    body = completion(bridge, job)
    before = len(proxy.passages)

    reply = answer("POST", HEADERS, body, lambda: bridge)

    assert reply.status == 200 and reply.body is not None
    assert reply.body["results"][0]["result"] == "handled"
    trips = [(p.method, p.path.split("?")[0]) for p in proxy.passages[before:]]
    table = trips[0][1].split("(")[0]
    assert trips == [
        ("GET", f"{table}(PartitionKey='{job.id}',RowKey='job')"),
        ("POST", table),  # the claim: insert if absent
        ("PATCH", f"{table}(PartitionKey='{job.id}',RowKey='job')"),
    ], trips
    assert len(job_events(loop_stack, DONE, job.id)) == 1

    # Everything an operator reads is there: the effect settled, the span's records kept.
    assert [e.state for e in bridge.ledger.effects(job.id)] == [EffectState.COMPLETED]
    decisions = [r.get("decision") for r in bridge.ledger.trail(job.id)]
    assert "event-received" in decisions and "effect-performed" in decisions

    # Delivered again: one read, which finds the job concluded, and the span's record of that.
    before = len(proxy.passages)
    again = answer("POST", HEADERS, body, lambda: bridge)
    assert again.body is not None and again.body["results"][0]["result"] == "duplicate"
    assert [p.method for p in proxy.passages[before:]] == ["GET", "PUT"]
    assert "duplicate-skipped" in [r.get("decision") for r in bridge.ledger.trail(job.id)]
    assert len(job_events(loop_stack, DONE, job.id)) == 1
