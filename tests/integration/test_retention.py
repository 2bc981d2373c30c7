"""Retention and the job indexes, against a real Azurite Table service: listing reads the indexes,
never the whole table; old finished jobs are forgotten row by row, open and blocked ones never."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.data.tables import TableClient

from bridge.contracts import Outcome, Route, Submission
from bridge.effects import Fact, plan
from bridge.ledger import Claim, JobRecord, JobState
from bridge.ledger.table import INDEX_PARTITION, TableLedger
from bridge.local.azurite import Azurite
from bridge.retention import Retention

pytestmark = pytest.mark.integration
DAY = 86400.0


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with Azurite(Path(tmp_path_factory.mktemp("azurite"))) as running:
        yield running


@pytest.fixture
def table(azurite: Azurite) -> str:
    return f"r{secrets.token_hex(6)}"


@pytest.fixture
def ledger(azurite: Azurite, table: str) -> Iterator[TableLedger]:
    ledger = TableLedger.from_connection_string(azurite.connection_string, table)
    yield ledger
    ledger.close()


def iso(days_from_now: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days_from_now)).isoformat(timespec="milliseconds")


def job(name: str) -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": "retention", "run_id": name, "task_id": "submit"},
            "job": {"command": "echo", "environment": "azureml:e:1", "compute": "cpu"},
            "on": {"completed": ["a://done"]},
        }
    )


def recorded(ledger: TableLedger, name: str, state: JobState, accepted: float) -> Submission:
    submission = job(name)
    ledger.add_job(JobRecord(submission, state, accepted_at=iso(accepted)))
    return submission


def with_an_effect_and_a_trail(ledger: TableLedger, submission: Submission) -> None:
    fact = Fact(submission.id, Outcome.COMPLETED, "Completed", "exp", "ws", None, submission.origin)
    claim = ledger.claim(plan(fact, Route(assets=("a://done",)))[0], time.time(), 60)
    assert isinstance(claim, Claim)
    ledger.complete(claim)
    ledger.add_trail(submission.id, [{"record": "decision", "time": iso(0), "span_id": "s1"}])


def test_listing_is_newest_first_from_the_index_with_state_since_and_attention(
    ledger: TableLedger,
) -> None:
    oldest = recorded(ledger, "oldest", JobState.CREATED, -3)
    middle = recorded(ledger, "middle", JobState.CREATED, -2)
    newest = recorded(ledger, "newest", JobState.CREATED, -1)
    ledger.update_job(oldest.id, JobState.COMPLETED)
    ledger.update_job(middle.id, JobState.CREATED, blocked="[credentials] refused")
    refused = recorded(ledger, "refused", JobState.REJECTED, -0.5)

    assert [r.name for r in ledger.jobs(limit=2)] == [refused.id, newest.id]
    assert [r.name for r in ledger.jobs(since=iso(-2.5))] == [refused.id, newest.id, middle.id]
    assert [r.name for r in ledger.jobs(state=JobState.COMPLETED)] == [oldest.id]
    assert [r.name for r in ledger.jobs(blocked=True)] == [middle.id]
    assert {r.name for r in ledger.jobs(attention=True)} == {middle.id, refused.id}

    ledger.update_job(middle.id, JobState.COMPLETED, blocked=None)  # healed
    assert ledger.jobs(blocked=True) == []


def test_retention_forgets_old_finished_jobs_and_keeps_open_blocked_and_recent_ones(
    ledger: TableLedger,
) -> None:
    finished = recorded(ledger, "finished", JobState.COMPLETED, -100)
    with_an_effect_and_a_trail(ledger, finished)
    still_open = recorded(ledger, "open", JobState.CREATED, -100)
    ledger.watch(still_open.id, time.time() + 3600)
    blocked = recorded(ledger, "blocked", JobState.CREATED, -100)
    ledger.update_job(blocked.id, JobState.CREATED, blocked="[missing-asset] no DAG yet")
    recent = recorded(ledger, "recent", JobState.COMPLETED, -10)
    ledger.reject_message("old-message", "not JSON", b"{")

    report = Retention(ledger, days=90, clock=lambda: time.time() + 1).run()

    assert dict(report.actions) == {"forgotten": 1, "kept-open": 1, "kept-blocked": 1}
    assert ledger.get_job(finished.id) is None
    assert ledger.effects(finished.id) == [] and ledger.trail(finished.id) == []
    assert {r.name for r in ledger.jobs()} == {still_open.id, blocked.id, recent.id}
    assert report.messages == 0  # received just now
    later = Retention(ledger, days=90, clock=lambda: time.time() + 91 * DAY).run()
    assert later.messages == 1 and ledger.rejected_messages() == []
    assert ledger.get_job(recent.id) is None and ledger.get_job(still_open.id) is not None


def test_reindex_lists_jobs_recorded_before_the_index_existed(
    ledger: TableLedger, azurite: Azurite, table: str
) -> None:
    legacy = recorded(ledger, "legacy", JobState.CREATED, -1)
    raw = TableClient.from_connection_string(azurite.connection_string, table_name=table)
    for row in raw.query_entities("PartitionKey eq @p", parameters={"p": INDEX_PARTITION}):
        raw.delete_entity(INDEX_PARTITION, row["RowKey"])  # as a ledger written before this
    assert ledger.jobs() == []

    assert ledger.reindex() == 1

    assert [r.name for r in ledger.jobs()] == [legacy.id]
