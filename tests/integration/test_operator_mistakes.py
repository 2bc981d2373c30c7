"""What people do to the bridge loses nothing: a refusal an operator can fix blocks and heals.

Against the loop stack's real Airflow and Azure ML emulator, each test with bridges of its own (a
ledger table of their own, a clock moved by hand so that backoff takes no wall time):
- one of two instances has a wrong Airflow password: the healthy one performs the effect;
- a route's asset appears only after the job ended (a consumer DAG deployed late);
- Azure ML answers 403 to the first six requests (role assignments still propagating);
- `bridge retry` re-drives an effect that failed for good, once the cause is fixed.
Each ends with exactly one asset event on the right route, and no `Rejected`.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import health
from bridge.composition import build
from bridge.contracts import Submission
from bridge.errors import BlockedError
from bridge.events import JobEvent
from bridge.ledger import EffectState, JobState
from bridge.local.stack import Stack
from bridge.reconcile import Reconciler
from bridge.service import Bridge, Result
from bridge.settings import Settings
from tests.integration.conftest import (
    Clock,
    eventually,
    job_events,
    job_tags,
    own_ledger,
    run_bridge,
)

pytestmark = pytest.mark.integration

DONE = "azureml://bridge-tests/loop/completed"
FAILED = "azureml://bridge-tests/loop/failed"
RUNNING = ("NotStarted", "Queued", "Starting", "Preparing", "Running", "Finalizing")


@pytest.fixture
def settings(loop_stack: Stack) -> Settings:
    return own_ledger(loop_stack, "mistakes")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def bridge_of(settings: Settings, clock: Clock) -> Bridge:
    bridge = build(settings)
    bridge.clock = clock
    return bridge


def submission(*completed: str) -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": "operator_mistakes", "run_id": secrets.token_hex(6),
                       "task_id": "submit"},
            "job": {"command": "true", "environment": "azureml:env:1", "compute": "cpu-cluster",
                    "experiment_name": "mistakes"},
            "on": {"completed": list(completed or [DONE]), "failed": [FAILED]},
        }
    )  # fmt: skip


def completed_job(stack: Stack, bridge: Bridge, job: Submission) -> None:
    assert bridge.submit(job.to_json().encode(), job.id).result is Result.CREATED
    stack.emulator.wait_for_status(job.id, ["Completed"], timeout=60)


def event(stack: Stack, job: Submission, kind: str = "RunCompleted") -> JobEvent:
    return JobEvent(
        id=secrets.token_hex(8), type=f"Microsoft.MachineLearningServices.{kind}",
        source=stack.emulator.workspace_id, subject=f"experiments/x/runs/{job.id}",
        time="2026-12-04T10:00:00.0000000Z", job_name=job.id, status="Completed",
        tags=job_tags(stack, job.id),
    )  # fmt: skip


def rejected_on_failed_route(stack: Stack, job: Submission) -> list[object]:
    return [e for e in job_events(stack, FAILED, job.id) if e.extra.get("status") == "Rejected"]


def test_a_wrong_password_on_one_instance_blocks_and_the_healthy_one_performs_the_effect(
    loop_stack: Stack, settings: Settings, clock: Clock
) -> None:
    healthy = bridge_of(settings, clock)
    rotated = bridge_of(dataclasses.replace(settings, airflow_password="rotated-away"), clock)
    job = submission()
    completed_job(loop_stack, healthy, job)

    first = rotated.handle(event(loop_stack, job, "RunCompleted"))

    assert first.result is Result.BLOCKED and "refused the credentials" in first.detail
    record = healthy.ledger.get_job(job.id)
    assert record is not None and record.state is JobState.CREATED  # not concluded
    assert record.blocked and record.blocked.startswith("[credentials]")
    assert [e.state for e in healthy.ledger.effects(job.id)] == [EffectState.BLOCKED]
    assert job_events(loop_stack, DONE, job.id) == []

    second = healthy.handle(event(loop_stack, job, "RunStatusChanged"))

    assert second.result is Result.HANDLED
    assert len(job_events(loop_stack, DONE, job.id)) == 1
    record = healthy.ledger.get_job(job.id)
    assert record is not None and record.state is JobState.COMPLETED and record.blocked is None
    assert rotated.handle(event(loop_stack, job)).result is Result.DUPLICATE
    assert len(job_events(loop_stack, DONE, job.id)) == 1 and not rejected_on_failed_route(
        loop_stack, job
    )


@pytest.fixture
def late_asset(loop_stack: Stack) -> Iterator[tuple[str, Path]]:
    """An asset URI of this test's own, and where its consumer DAG goes once it is 'deployed'."""
    assert loop_stack.airflow is not None
    tag = secrets.token_hex(4)
    path = loop_stack.airflow.dags_folder / f"late_consumer_{tag}.py"
    yield f"azureml://bridge-tests/late-{tag}/completed", path
    path.unlink(missing_ok=True)


def deploy_consumer(stack: Stack, uri: str, path: Path) -> None:
    dag_id = path.stem
    path.write_text(
        "from airflow.sdk import Asset, dag, task\n\n\n"
        "@dag(schedule=None)\n"
        f"def {dag_id}():\n"
        f"    @task(outlets=[Asset({uri!r})])\n"
        "    def declare():\n"
        "        pass\n\n"
        "    declare()\n\n\n"
        f"{dag_id}()\n"
    )
    assert stack.airflow is not None
    stack.airflow.wait_for_dags([dag_id], timeout=90)

    def known() -> bool:
        try:
            stack.airflow.rest().asset_id(uri)  # type: ignore[union-attr]
        except BlockedError:
            return False
        return True

    eventually(known, timeout=60, what=f"Airflow knows {uri}")


def test_an_asset_that_appears_after_the_job_ended_gets_its_event(
    loop_stack: Stack, settings: Settings, clock: Clock, late_asset: tuple[str, Path]
) -> None:
    uri, dag_file = late_asset
    bridge = bridge_of(settings, clock)
    job = submission(uri, DONE)
    completed_job(loop_stack, bridge, job)

    report = bridge.handle(event(loop_stack, job))

    assert report.result is Result.BLOCKED and "no DAG references the asset URI" in report.detail
    assert len(job_events(loop_stack, DONE, job.id)) == 1  # the route's other asset is done
    blocked = json.loads(run_bridge(settings, "jobs", "--state", "blocked", "--json").stdout)
    assert [line["name"] for line in blocked] == [job.id]
    assert blocked[0]["pending"] == [uri] and "[missing-asset]" in blocked[0]["blocked"]
    assert health.blocked(bridge.ledger) == {"jobs": 1, "causes": {"missing-asset": 1}}

    deploy_consumer(loop_stack, uri, dag_file)
    clock.advance(3600)
    sweep = Reconciler(bridge).sweep()

    assert sweep.jobs == {job.id: "retried"}
    [landed] = job_events(loop_stack, uri, job.id)
    assert landed.extra["status"] == "Completed"
    assert len(job_events(loop_stack, DONE, job.id)) == 1
    record = bridge.ledger.get_job(job.id)
    assert record is not None and record.state is JobState.COMPLETED and record.blocked is None
    assert not rejected_on_failed_route(loop_stack, job)
    assert health.blocked(bridge.ledger) == {"jobs": 0, "causes": {}}


def test_azure_ml_refusing_the_first_six_requests_blocks_then_the_job_runs(
    loop_stack: Stack, settings: Settings, clock: Clock
) -> None:
    bridge = bridge_of(settings, clock)
    job = submission()
    loop_stack.emulator.fail_next(403, count=6, job=job.id)

    first = bridge.submit(job.to_json().encode(), job.id)

    # Completed as a message (no redelivery, no dead letter): the sweep owns the retries.
    assert first.result is Result.BLOCKED and "403" in first.detail
    record = bridge.ledger.get_job(job.id)
    assert record is not None and record.state is JobState.ACCEPTED
    assert record.blocked and record.blocked.startswith("[permission]")
    actions = []
    for _ in range(10):
        clock.advance(1000)  # past any backoff (at most 15 minutes)
        actions.append(Reconciler(bridge).sweep().jobs.get(job.id))
        if loop_stack.emulator.job(job.id) is not None:
            break
    assert actions[-1] == "resumed" and set(actions[:-1]) == {"blocked"}, actions
    loop_stack.emulator.wait_for_status(job.id, ["Completed"], timeout=60)
    clock.advance(3600)
    Reconciler(bridge).sweep()

    assert len(job_events(loop_stack, DONE, job.id)) == 1
    assert job_events(loop_stack, FAILED, job.id) == []
    record = bridge.ledger.get_job(job.id)
    assert record is not None and record.state is JobState.COMPLETED and record.blocked is None


def test_bridge_retry_redrives_a_failed_effect_once_after_the_fix(
    loop_stack: Stack, settings: Settings, clock: Clock, late_asset: tuple[str, Path]
) -> None:
    uri, dag_file = late_asset
    bridge = bridge_of(settings, clock)
    bridge.blocked_give_up = 0.0  # no time to heal: the missing asset fails for good at once
    job = submission(uri)
    completed_job(loop_stack, bridge, job)
    assert bridge.handle(event(loop_stack, job)).result is Result.HANDLED
    [effect] = bridge.ledger.effects(job.id)
    assert effect.state is EffectState.FAILED and "gave up" in (effect.reason or "")
    dry_run = run_bridge(settings, "retry", "--all", "--dry-run", "--json")
    assert dry_run.returncode == 0, dry_run.stderr
    dry = json.loads(dry_run.stdout)
    assert [(line["job"], line["result"]) for line in dry] == [(job.id, "would retry")]

    deploy_consumer(loop_stack, uri, dag_file)
    done = run_bridge(settings, "retry", job.id, "--json")

    assert done.returncode == 0, done.stderr
    assert [line["result"] for line in json.loads(done.stdout)] == ["handled"]
    assert len(job_events(loop_stack, uri, job.id)) == 1
    again = run_bridge(settings, "retry", "--all", "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == []
    assert len(job_events(loop_stack, uri, job.id)) == 1
    record = bridge.ledger.get_job(job.id)
    assert record is not None and record.failed is None and record.state is JobState.COMPLETED
