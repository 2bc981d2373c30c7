"""The ledger's conditional writes, against a real Azurite Table service."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.contracts import Outcome, Route, Submission
from bridge.effects import Effect, Fact, plan
from bridge.ledger import Busy, Claim, EffectState, JobRecord, JobState, Settled
from bridge.ledger.table import TableLedger
from bridge.local.azurite import Azurite

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with Azurite(Path(tmp_path_factory.mktemp("azurite"))) as running:
        yield running


@pytest.fixture
def ledger(azurite: Azurite) -> Iterator[TableLedger]:
    table = TableLedger.from_connection_string(
        azurite.connection_string, f"t{secrets.token_hex(6)}"
    )
    yield table
    table.close()


def submission(run_id: str = "r1") -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": "train", "run_id": run_id, "task_id": "submit"},
            "job": {"command": "echo", "environment": "azureml:e:1", "compute": "cpu"},
            "on": {"completed": ["a://done"]},
        }
    )


def effect(job: Submission) -> Effect:
    fact = Fact(job.id, Outcome.COMPLETED, "Completed", "exp", "ws", None, job.origin)
    return plan(fact, Route(assets=("a://done",)))[0]


def test_add_job_inserts_once_and_returns_the_stored_record(ledger: TableLedger) -> None:
    job = submission()
    first, inserted = ledger.add_job(JobRecord(job, JobState.ACCEPTED))
    again, inserted_again = ledger.add_job(JobRecord(job, JobState.REJECTED, reason="x"))
    assert inserted and not inserted_again and first.state is JobState.ACCEPTED
    assert again.state is JobState.ACCEPTED and again.submission == job
    assert ledger.get_job(job.id) == again


def test_large_submission_survives_the_64k_property_limit(ledger: TableLedger) -> None:
    big = submission().model_copy(
        update={"job": submission().job.model_copy(update={"command": "x" * 32_000})}
    )
    ledger.add_job(JobRecord(big, JobState.ACCEPTED))
    stored = ledger.get_job(big.id)
    assert stored is not None and stored.submission == big


def test_update_job_moves_state_and_keeps_the_submission(ledger: TableLedger) -> None:
    job = submission()
    ledger.add_job(JobRecord(job, JobState.ACCEPTED))
    ledger.update_job(job.id, JobState.CREATED, studio_url="https://studio/x", created_at="t1")
    stored = ledger.get_job(job.id)
    assert stored is not None
    assert (stored.state, stored.studio_url, stored.created_at) == (
        JobState.CREATED,
        "https://studio/x",
        "t1",
    )
    assert stored.submission == job


def test_unknown_job_is_none(ledger: TableLedger) -> None:
    assert ledger.get_job("never-submitted") is None


def test_second_claim_while_the_first_is_live_is_busy(ledger: TableLedger) -> None:
    target = effect(submission())
    first = ledger.claim(target, now=1000.0, lease_seconds=60)
    second = ledger.claim(target, now=1001.0, lease_seconds=60)
    assert isinstance(first, Claim) and not first.taken_over
    assert second == Busy(1060.0)


def test_completed_effect_is_settled_for_every_later_claim(ledger: TableLedger) -> None:
    target = effect(submission())
    claim = ledger.claim(target, now=1000.0, lease_seconds=60)
    assert isinstance(claim, Claim)
    ledger.complete(claim)
    assert ledger.claim(target, now=5000.0, lease_seconds=60) == Settled(EffectState.COMPLETED, "")


def test_failed_effect_keeps_its_reason_and_is_not_retried(ledger: TableLedger) -> None:
    job = submission()
    target = effect(job)
    claim = ledger.claim(target, now=1000.0, lease_seconds=60)
    assert isinstance(claim, Claim)
    ledger.fail(claim, "no DAG references asset a://done")
    assert ledger.claim(target, now=2000.0, lease_seconds=60) == Settled(
        EffectState.FAILED, "no DAG references asset a://done"
    )
    [record] = ledger.effects(job.id)
    assert (record.state, record.target) == (EffectState.FAILED, "a://done")


def test_lapsed_claim_is_taken_over_once(ledger: TableLedger) -> None:
    target = effect(submission())
    dead = ledger.claim(target, now=1000.0, lease_seconds=10)
    rescuer = ledger.claim(target, now=1011.0, lease_seconds=10)
    latecomer = ledger.claim(target, now=1012.0, lease_seconds=10)
    assert isinstance(dead, Claim) and isinstance(rescuer, Claim)
    assert rescuer.taken_over
    assert isinstance(latecomer, Busy)


def test_a_worker_whose_claim_was_taken_over_cannot_settle_it(ledger: TableLedger) -> None:
    from bridge.errors import TransientError

    target = effect(submission())
    dead = ledger.claim(target, now=1000.0, lease_seconds=10)
    rescuer = ledger.claim(target, now=1011.0, lease_seconds=10)
    assert isinstance(dead, Claim) and isinstance(rescuer, Claim)
    with pytest.raises(TransientError, match="taken over"):
        ledger.complete(dead)
    ledger.complete(rescuer)


def test_released_claim_can_be_claimed_again_at_once(ledger: TableLedger) -> None:
    target = effect(submission())
    claim = ledger.claim(target, now=1000.0, lease_seconds=60)
    assert isinstance(claim, Claim)
    ledger.release(claim)
    again = ledger.claim(target, now=1001.0, lease_seconds=60)
    assert isinstance(again, Claim) and not again.taken_over


def test_rejected_message_is_recorded_with_its_reason(ledger: TableLedger) -> None:
    ledger.reject_message("msg/with?odd#chars", "submission is not JSON", b"\x00garbage")
    [row] = ledger.rejected_messages()
    assert row["message_id"] == "msg/with?odd#chars"
    assert row["reason"] == "submission is not JSON"
    assert row["body"] == b"\x00garbage"


def test_ledger_down_is_transient(tmp_path: Path) -> None:
    from bridge.errors import TransientError
    from bridge.local.process import free_port

    port = free_port()
    table = TableLedger.from_connection_string(
        Azurite(tmp_path, table_port=port, queue_port=port).connection_string, "nothere"
    )
    with pytest.raises(TransientError, match="ledger: could not create the ledger table"):
        table.get_job("x")


def test_watch_list_returns_only_due_jobs_earliest_first(ledger: TableLedger) -> None:
    ledger.watch("late", 300.0)
    ledger.watch("early", 100.0)
    ledger.watch("middle", 200.0)
    assert [w.job_name for w in ledger.due(250.0, limit=10)] == ["early", "middle"]
    assert ledger.due(50.0, limit=10) == []
    assert len(ledger.due(1000.0, limit=2)) == 2


def test_watching_again_keeps_the_backoff_a_resend_must_not_reset(ledger: TableLedger) -> None:
    ledger.watch("job-a", 100.0)
    ledger.postpone("job-a", 700.0, checks=3)
    ledger.watch("job-a", 150.0)  # the same submission, redelivered
    [watch] = ledger.due(1000.0, limit=10)
    assert (watch.job_name, watch.due_at, watch.checks) == ("job-a", 700.0, 3)


def test_unwatched_job_is_gone_and_unwatching_twice_is_fine(ledger: TableLedger) -> None:
    ledger.watch("job-b", 100.0)
    ledger.unwatch("job-b")
    ledger.unwatch("job-b")
    ledger.postpone("job-b", 200.0, checks=1)  # a sweep racing the unwatch adds nothing back
    assert ledger.due(1000.0, limit=10) == []


def test_watch_list_is_its_own_partition_apart_from_job_records(ledger: TableLedger) -> None:
    job = submission("watched")
    ledger.watch(job.id, 100.0)
    ledger.add_job(JobRecord(job, JobState.ACCEPTED))
    assert [w.job_name for w in ledger.due(1000.0, limit=10)] == [job.id]
    assert ledger.effects(job.id) == []


# -- no state ever goes back ------------------------------------------------------------------


def test_a_created_written_after_the_outcome_was_routed_changes_nothing(
    ledger: TableLedger,
) -> None:
    job = submission()
    ledger.add_job(JobRecord(job, JobState.ACCEPTED))
    assert ledger.update_job(job.id, JobState.COMPLETED, finished_at="t2")

    late = ledger.update_job(job.id, JobState.CREATED, studio_url="https://studio/x")

    stored = ledger.get_job(job.id)
    assert late is False and stored is not None
    assert (stored.state, stored.finished_at, stored.studio_url) == (
        JobState.COMPLETED, "t2", None,
    )  # fmt: skip


@pytest.mark.parametrize("first", [JobState.CREATED, JobState.REJECTED])
def test_a_rejection_and_a_creation_in_either_order_keep_the_first(
    ledger: TableLedger, first: JobState
) -> None:
    job = submission()
    ledger.add_job(JobRecord(job, JobState.ACCEPTED))
    second = JobState.REJECTED if first is JobState.CREATED else JobState.CREATED

    assert ledger.update_job(job.id, first, reason="one")
    assert not ledger.update_job(job.id, second, reason="two")

    stored = ledger.get_job(job.id)
    assert stored is not None and (stored.state, stored.reason) == (first, "one")


def test_a_rejection_racing_a_creation_lets_exactly_one_win(ledger: TableLedger) -> None:
    """Two writers that both read ACCEPTED: the ETag lets only one of them move the job (an
    unconditional merge would let both 'succeed', the later one silently overwriting)."""
    import threading

    for round_ in range(12):
        job = submission(run_id=f"race-{round_}")
        ledger.add_job(JobRecord(job, JobState.ACCEPTED))
        start = threading.Barrier(2)
        moved: dict[JobState, bool] = {}

        def write(
            state: JobState,
            job: Submission = job,
            start: threading.Barrier = start,
            moved: dict[JobState, bool] = moved,
        ) -> None:
            start.wait()
            moved[state] = ledger.update_job(job.id, state, reason=state.value)

        writers = [threading.Thread(target=write, args=(state,))
                   for state in (JobState.CREATED, JobState.REJECTED)]  # fmt: skip
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()

        stored = ledger.get_job(job.id)
        assert stored is not None
        assert sorted(moved.values()) == [False, True], moved
        assert moved[stored.state] and stored.reason == stored.state.value


def test_a_blocked_effect_is_claimed_again_and_keeps_when_it_was_first_blocked(
    ledger: TableLedger,
) -> None:
    job = submission()
    first = ledger.claim(effect(job), now=1000.0, lease_seconds=60)
    assert isinstance(first, Claim)
    ledger.block(first, "[credentials] refused", since=1000.0)

    again = ledger.claim(effect(job), now=1001.0, lease_seconds=60)  # no lease to wait out

    assert isinstance(again, Claim)
    assert (again.taken_over, again.blocked_since) == (False, 1000.0)  # refused: nothing sent
    ledger.complete(again)
    assert ledger.claim(effect(job), now=1002.0, lease_seconds=60) == Settled(
        EffectState.COMPLETED, ""
    )


def test_reopening_a_failed_effect_keeps_the_mark_of_an_attempt_that_may_have_sent_it(
    ledger: TableLedger,
) -> None:
    job = submission()
    first = ledger.claim(effect(job), now=1000.0, lease_seconds=60)
    assert isinstance(first, Claim)
    ledger.abandon(first)  # a lost reply: Airflow may have acted
    taken = ledger.claim(effect(job), now=1001.0, lease_seconds=60)
    assert isinstance(taken, Claim) and taken.taken_over
    ledger.fail(taken, "HTTP 400")

    assert ledger.reopen(job.id, effect(job).id, now=2000.0)
    redriven = ledger.claim(effect(job), now=2001.0, lease_seconds=60)

    assert isinstance(redriven, Claim)
    assert (redriven.taken_over, redriven.blocked_since) == (True, 2000.0)  # checked first
    assert not ledger.reopen(job.id, "completed-asset-nothing", now=2002.0)


def test_a_conclusion_settles_its_effects_and_keeps_its_trail_in_one_write(
    ledger: TableLedger,
) -> None:
    """The hot path's last round trip: the job's row says which effects its conclusion settled
    and holds the span's records; every reader sees them as if written to rows of their own."""
    job = submission()
    ledger.add_job(JobRecord(job, JobState.CREATED))
    claim = ledger.claim(effect(job), now=1000.0, lease_seconds=60)
    assert isinstance(claim, Claim)
    records = [{"record": "decision", "time": "2026-12-04T10:00:00.000+00:00", "span_id": "s1",
                "decision": "effect-performed"}]  # fmt: skip
    seen = ledger.get_job(job.id)
    assert ledger.update_job(job.id, JobState.COMPLETED, seen=seen, settles=[claim], trail=records)

    [settled] = ledger.effects(job.id)
    assert settled.state is EffectState.COMPLETED
    assert ledger.trail(job.id) == records
    # The effect's own row still says in progress, until a claim finds it settled and says so.
    raw = ledger._table.get_entity(job.id, effect(job).id)
    assert raw["state"] == EffectState.IN_PROGRESS.value
    assert ledger.claim(effect(job), now=1001.0, lease_seconds=60) == Settled(
        EffectState.COMPLETED, ""
    )
    assert ledger._table.get_entity(job.id, effect(job).id)["state"] == "completed"


def test_a_later_move_of_a_concluded_job_settles_and_keeps_with_writes_of_their_own(
    ledger: TableLedger,
) -> None:
    """Only a job's first conclusion carries them on its row (an operator's retry concludes a
    job again): nothing the first one kept is overwritten."""
    job = submission()
    ledger.add_job(JobRecord(job, JobState.CREATED))
    first = [{"record": "decision", "time": "2026-12-04T10:00:00.000+00:00", "span_id": "s1"}]
    assert ledger.update_job(job.id, JobState.COMPLETED, trail=first)
    claim = ledger.claim(effect(job), now=1000.0, lease_seconds=60)
    assert isinstance(claim, Claim)
    later = [{"record": "decision", "time": "2026-12-04T11:00:00.000+00:00", "span_id": "s2"}]
    assert ledger.update_job(job.id, JobState.COMPLETED, settles=[claim], trail=later)

    assert ledger.trail(job.id) == first + later
    assert ledger._table.get_entity(job.id, effect(job).id)["state"] == "completed"
    assert [e.state for e in ledger.effects(job.id)] == [EffectState.COMPLETED]


def test_a_move_refused_settles_and_keeps_nothing(ledger: TableLedger) -> None:
    job = submission()
    ledger.add_job(JobRecord(job, JobState.CREATED))
    assert ledger.update_job(job.id, JobState.FAILED)
    claim = ledger.claim(effect(job), now=1000.0, lease_seconds=60)
    assert isinstance(claim, Claim)
    records = [{"record": "decision", "time": "2026-12-04T10:00:00.000+00:00", "span_id": "s1"}]
    assert not ledger.update_job(job.id, JobState.COMPLETED, settles=[claim], trail=records)
    assert ledger.trail(job.id) == []
    assert [e.state for e in ledger.effects(job.id)] == [EffectState.IN_PROGRESS]
