"""Reconciliation against the real stack: the sweep finds what no event told, routes it through the
same effect-once path, and an event arriving afterwards changes nothing.

Each test uses a bridge of its own (its own ledger table, a clock it moves by hand) beside the loop
stack's Azure ML emulator and Airflow, so the dev host's own timer never touches its jobs.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.adapters.azureml import AzureMLJobs
from bridge.composition import azureml_jobs, build
from bridge.contracts import Outcome, Submission
from bridge.events import JobEvent
from bridge.ledger import JobRecord, JobState
from bridge.local.stack import Stack
from bridge.reconcile import Reconciler
from bridge.service import Bridge, Result
from bridge.settings import Settings
from tests.integration.conftest import Clock, job_events, job_tags, own_ledger, run_bridge

pytestmark = pytest.mark.integration

DONE = "azureml://bridge-tests/loop/completed"
FAILED = "azureml://bridge-tests/loop/failed"
CANCELED = "azureml://bridge-tests/loop/canceled"
GRACE = 600.0


@pytest.fixture
def own_settings(loop_stack: Stack) -> Settings:
    return own_ledger(loop_stack, "reconcile", reconcile_after_seconds=GRACE)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bridge(own_settings: Settings, clock: Clock) -> Iterator[Bridge]:
    bridge = build(own_settings)
    bridge.clock = clock
    yield bridge


def submission(command: str = "sleep 300", compute: str = "cpu-cluster") -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": "reconcile_tests", "run_id": secrets.token_hex(6),
                       "task_id": "submit"},
            "job": {"command": command, "environment": "azureml:env:1", "compute": compute,
                    "experiment_name": "reconcile"},
            "on": {"completed": [DONE], "failed": [FAILED], "canceled": [CANCELED]},
        }
    )  # fmt: skip


def submit(bridge: Bridge, job: Submission) -> None:
    report = bridge.submit(job.to_json().encode(), job.id)
    assert report.result is Result.CREATED, report


def adapter(stack: Stack) -> AzureMLJobs:
    return azureml_jobs(stack.settings)


def event(stack: Stack, job: Submission, status: str) -> JobEvent:
    return JobEvent(
        id=secrets.token_hex(8), type="Microsoft.MachineLearningServices.RunStatusChanged",
        source=stack.emulator.workspace_id, subject=f"experiments/x/runs/{job.id}",
        time="2026-11-26T10:00:00.0000000Z", job_name=job.id, status=status,
        tags=job_tags(stack, job.id),
    )  # fmt: skip


def gets(stack: Stack, job: Submission) -> int:
    requests = stack.emulator.requests
    return len([r for r in requests if r.method == "GET" and r.path.endswith(f"/jobs/{job.id}")])


def test_nothing_is_read_before_the_grace_period(
    loop_stack: Stack, bridge: Bridge, clock: Clock
) -> None:
    job = submission()
    submit(bridge, job)
    clock.advance(GRACE - 1)
    report = Reconciler(bridge).sweep()
    assert (report.due, gets(loop_stack, job)) == (0, 0)


def test_canceled_job_that_sent_no_event_is_routed_once_and_a_late_event_changes_nothing(
    loop_stack: Stack, bridge: Bridge, clock: Clock
) -> None:
    job = submission()
    submit(bridge, job)
    loop_stack.emulator.wait_for_status(job.id, ["Running"], timeout=10)
    adapter(loop_stack).cancel(job.id)
    clock.advance(GRACE)

    report = Reconciler(bridge).sweep()

    assert report.jobs == {job.id: "concluded"} and gets(loop_stack, job) == 1
    [routed] = job_events(loop_stack, CANCELED, job.id)
    assert (routed.extra["status"], routed.extra["via"]) == ("Canceled", "reconcile")
    record = bridge.ledger.get_job(job.id)
    assert record is not None and record.state is JobState.CANCELED
    assert Reconciler(bridge).sweep().due == 0  # off the watch list: O(open jobs) from now on
    late = bridge.handle(event(loop_stack, job, "Canceled"))
    contradicting = bridge.handle(event(loop_stack, job, "Failed"))
    assert (late.result, contradicting.result) == (Result.DUPLICATE, Result.IGNORED)
    assert len(job_events(loop_stack, CANCELED, job.id)) == 1
    assert job_events(loop_stack, FAILED, job.id) == []


def test_running_job_is_read_again_with_doubling_backoff_up_to_an_hour(
    loop_stack: Stack, bridge: Bridge, clock: Clock
) -> None:
    job = submission()
    submit(bridge, job)
    waits = []
    clock.advance(GRACE)
    for _ in range(5):
        assert Reconciler(bridge).sweep().jobs == {job.id: "running"}
        [watch] = [w for w in bridge.ledger.due(clock.now + 10**6, 10) if w.job_name == job.id]
        waits.append(round(watch.due_at - clock.now))
        clock.advance(watch.due_at - clock.now)
    assert waits == [600, 1200, 2400, 3600, 3600]
    assert gets(loop_stack, job) == 5  # one read per check, nothing in between


def test_submission_stuck_in_accepted_is_resumed(
    loop_stack: Stack, bridge: Bridge, clock: Clock
) -> None:
    job = submission()
    # What a worker that died between recording and creating leaves behind:
    bridge.ledger.watch(job.id, clock.now + GRACE)
    bridge.ledger.add_job(JobRecord(job, JobState.ACCEPTED))
    assert loop_stack.emulator.job(job.id) is None
    clock.advance(GRACE)

    assert Reconciler(bridge).sweep().jobs == {job.id: "resumed"}

    assert loop_stack.emulator.job(job.id) is not None
    record = bridge.ledger.get_job(job.id)
    assert record is not None and record.state is JobState.CREATED


def test_job_azure_ml_no_longer_knows_is_reported_on_its_failed_route(
    loop_stack: Stack, bridge: Bridge, clock: Clock
) -> None:
    job = submission()
    submit(bridge, job)
    loop_stack.emulator.forget(job.id)
    clock.advance(GRACE)

    assert Reconciler(bridge).sweep().jobs == {job.id: "missing"}

    [routed] = job_events(loop_stack, FAILED, job.id)
    assert routed.extra["status"] == "NotFound"
    assert "Azure ML has no job named" in routed.extra["reason"]
    record = bridge.ledger.get_job(job.id)
    assert record is not None and record.state is JobState.FAILED


def test_rejection_whose_telling_was_interrupted_is_told(
    loop_stack: Stack, bridge: Bridge, clock: Clock
) -> None:
    job = submission()
    bridge.ledger.watch(job.id, clock.now)
    bridge.ledger.add_job(JobRecord(job, JobState.REJECTED, reason="policy: no"))
    assert Reconciler(bridge).sweep().jobs == {job.id: "told"}
    [routed] = job_events(loop_stack, FAILED, job.id)
    assert (routed.extra["status"], routed.extra["reason"]) == ("Rejected", "policy: no")
    assert Reconciler(bridge).sweep().due == 0


def test_completed_job_is_concluded_through_the_same_effects_as_its_event(
    loop_stack: Stack, bridge: Bridge, clock: Clock
) -> None:
    job = submission(command="echo done")
    submit(bridge, job)
    loop_stack.emulator.wait_for_status(job.id, ["Completed"], timeout=20)
    clock.advance(GRACE)
    assert Reconciler(bridge).sweep().jobs == {job.id: "concluded"}
    [routed] = job_events(loop_stack, DONE, job.id)
    replay = bridge.handle(event(loop_stack, job, "Completed"))
    assert replay.result is Result.DUPLICATE
    effect_ids = [e.effect_id for e in bridge.ledger.effects(job.id)]
    assert routed.extra["effect_id"] == f"{job.id}/{effect_ids[0]}" and len(effect_ids) == 1
    assert routed.extra["via"] == "reconcile" and Outcome.COMPLETED.value in effect_ids[0]


def test_bridge_reconcile_command_sweeps_with_the_environment_settings(
    loop_stack: Stack, own_settings: Settings
) -> None:
    settings = dataclasses.replace(own_settings, reconcile_after_seconds=0.5)
    bridge = build(settings)
    job = submission(command="exit 4")
    submit(bridge, job)
    loop_stack.emulator.wait_for_status(job.id, ["Failed"], timeout=20)
    time.sleep(0.6)
    done = run_bridge(settings, "reconcile")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["jobs"] == {job.id: "concluded"} and report["due"] == 1
    [routed] = job_events(loop_stack, FAILED, job.id)
    assert routed.extra["status"] == "Failed"
