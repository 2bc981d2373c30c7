"""`make demo`: the whole loop, offline, with a timeline.

Starts the local stack, triggers the producer DAG through Airflow's REST API, and follows the
submission: queued, Azure ML job created, running, completed, asset event posted, consumer DAG run
succeeded. Exits 0 only when the consumer succeeded and its log shows the job's details.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from bridge.ledger import EffectState
from bridge.local.stack import Stack, StackOptions, running_stack

PRODUCER = "azureml_train"
CONSUMER = "azureml_model_ready"
PRODUCER_TASK = "submit_training"
CONSUMER_TASK = "announce_model"
# The operator's own log line: its execute time, without Airflow's task start-up.
SUBMITTED_IN = re.compile(r"Submitted Azure ML job \S+ \(experiment [^)]*\) in (\d+) ms")
T = TypeVar("T")


class DemoFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Step:
    at: datetime
    what: str


def run(options: StackOptions, *, keep: bool = False, timeout: float = 150.0) -> int:
    started = time.monotonic()
    print("Starting the local stack (Azurite, Azure ML emulator, bridge dev host, Airflow 3)...")
    try:
        with running_stack(options) as stack:
            print(f"  stack up in {time.monotonic() - started:.1f}s")
            try:
                steps, details = follow_one_job(stack, timeout)
            except DemoFailed as exc:
                print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
                _explore(stack, keep)
                return 1
            print_timeline(steps)
            print(f"\nThe consumer DAG logged: {details}")
            _explore(stack, keep)
    except KeyboardInterrupt:
        print("\nStopped.")
        return 130
    print(f"Demo finished in {time.monotonic() - started:.1f}s; every process stopped.")
    return 0


def follow_one_job(stack: Stack, timeout: float) -> tuple[list[Step], str]:
    airflow = stack.airflow
    assert airflow is not None
    airflow.wait_for_dags([PRODUCER, CONSUMER], timeout=60)
    before = {run.dag_run_id for run in airflow.runs(CONSUMER)}
    t0 = _now()
    run_id = airflow.trigger(PRODUCER)
    print(f"Triggered {PRODUCER} (run {run_id}); following the submission...")
    if airflow.wait_for_run(PRODUCER, run_id, timeout=60) != "success":
        raise DemoFailed(f"producer run {run_id} did not succeed; see the Airflow UI")
    job_name = str(airflow.xcom(PRODUCER, run_id, PRODUCER_TASK, "return_value"))
    consumer = _wait(
        lambda: next((r for r in airflow.runs(CONSUMER) if r.dag_run_id not in before), None),
        timeout,
        f"no {CONSUMER} run appeared for job {job_name}",
    )
    state = airflow.wait_for_run(CONSUMER, consumer.dag_run_id, timeout=60)
    if state != "success":
        raise DemoFailed(f"consumer run {consumer.dag_run_id} ended {state}")
    log_text = airflow.task_log(CONSUMER, consumer.dag_run_id, CONSUMER_TASK)
    line = next(
        (ln for ln in log_text.splitlines() if job_name in ln and "Azure ML job" in ln), None
    )
    if line is None:
        raise DemoFailed(f"the consumer's log does not mention job {job_name}")
    return _timeline(stack, t0, run_id, job_name, consumer), line.strip()


def _timeline(
    stack: Stack, t0: datetime, run_id: str, job_name: str, consumer: object
) -> list[Step]:
    airflow = stack.airflow
    assert airflow is not None
    steps = [Step(t0, f"producer DAG {PRODUCER} triggered through the REST API")]
    from airflow_client.client import TaskInstanceApi

    submit = TaskInstanceApi(airflow.client()).get_task_instance(PRODUCER, run_id, PRODUCER_TASK)
    if submit.start_date and submit.end_date:
        took = (submit.end_date - submit.start_date).total_seconds()
        log_text = airflow.task_log(PRODUCER, run_id, PRODUCER_TASK)
        sent = SUBMITTED_IN.search(log_text)
        operator = f"operator {sent.group(1)} ms, " if sent else ""
        steps.append(Step(submit.start_date, "submit task started on an Airflow worker"))
        steps.append(
            Step(submit.end_date, f"submission queued ({operator}task instance {took:.2f}s)")
        )
    record = stack.bridge.ledger.get_job(job_name)
    if record and record.accepted_at:
        steps.append(Step(_parse(record.accepted_at), "bridge accepted the submission (policy ok)"))
    job = stack.emulator.job(job_name)
    if job is not None:
        steps.append(Step(_parse(job.created_at), f"Azure ML job {job_name} created"))
        for status, _, wall in job.history:
            if status in ("Running", "Completed", "Failed", "Canceled"):
                at = datetime.fromtimestamp(wall, UTC)
                steps.append(Step(at, f"job {status.lower()} (Azure ML event)"))
    for effect in stack.bridge.ledger.effects(job_name):
        if effect.state is EffectState.COMPLETED and effect.updated_at:
            steps.append(Step(_parse(effect.updated_at), f"asset event posted on {effect.target}"))
    start = getattr(consumer, "start_date", None)
    end = getattr(consumer, "end_date", None)
    refreshed = next(
        (r for r in airflow.runs(CONSUMER) if r.dag_run_id == getattr(consumer, "dag_run_id", "")),
        None,
    )
    start = getattr(refreshed, "start_date", start)
    end = getattr(refreshed, "end_date", end)
    if start:
        steps.append(Step(start, f"consumer DAG {CONSUMER} started"))
    if end:
        steps.append(Step(end, f"consumer DAG {CONSUMER} succeeded and logged the job"))
    return sorted(steps, key=lambda step: step.at)


def print_timeline(steps: list[Step]) -> None:
    t0 = steps[0].at
    print("\nTimeline")
    for step in steps:
        print(f"  +{(step.at - t0).total_seconds():6.2f}s  {step.what}")


def _explore(stack: Stack, keep: bool) -> None:
    airflow = stack.airflow
    if airflow is not None:
        login = f"user {airflow.username}, password {airflow.password}"
        print(f"\nAirflow UI: {airflow.base_url}  ({login})")
    print(f"Azure ML emulator: {stack.emulator.endpoint}  webhook: {stack.devhost.webhook_url}")
    if keep:
        print("The stack stays up (KEEP=1). Press Ctrl-C to stop it.")
        while True:
            time.sleep(3600)


def _wait(probe: Callable[[], T | None], timeout: float, failure: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.5)
    raise DemoFailed(failure)


def _now() -> datetime:
    return datetime.now(UTC)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)
