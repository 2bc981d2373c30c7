"""`make demo`: the whole loop, offline, with a timeline.

Starts the local stack, triggers the producer DAG through Airflow's REST API, and follows the
submission: queued, Azure ML job created, running, completed, asset event posted, consumer DAG run
succeeded. Then a second act: a long job that someone cancels in Azure ML Studio, followed to the
DAG scheduled on the failure asset. Each asset event says who found the outcome: an Azure ML event,
or the reconcile sweep (with `AZURE=observed` Azure ML raises no event for a canceled job). Exits
0 only when both consumers succeeded and their logs show the jobs.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from bridge.adapters.azureml import AzureMLJobs
from bridge.composition import azureml_jobs
from bridge.inspection import TRAIL_HEADER, trail_row
from bridge.ledger import EffectState
from bridge.local.airflow import LocalAirflow
from bridge.local.stack import Stack, StackOptions, running_stack
from bridge.settings import ENTRA, Settings

PRODUCER = "azureml_train"
CONSUMER = "azureml_model_ready"
PRODUCER_TASK = "submit_training"
CONSUMER_TASK = "announce_model"
LONG_PRODUCER = "azureml_train_long"
FAILURE_CONSUMER = "azureml_training_failed"
FAILURE_TASK = "report_failure"
# Which of the Function App's functions posts the asset event, by who found the outcome.
_FUNCTION = {
    "event": "bridge on_azureml_event",
    "reconcile": "bridge reconcile",
    "submission": "bridge on_submission",
}
_FOUND_BY = {
    "event": "by an Azure ML event",
    "reconcile": "by the reconcile sweep: no event told it",
    "submission": "by the bridge itself",
}
# The operator's own log line: its execute time, without Airflow's task start-up.
SUBMITTED_IN = re.compile(r"Submitted Azure ML job \S+ \(experiment [^)]*\) in (\d+) ms")
T = TypeVar("T")


class DemoFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Step:
    at: datetime
    what: str
    who: str = ""  # the process that did it: which Airflow server, which function, Azure ML


def run(options: StackOptions, *, keep: bool = False, timeout: float = 150.0) -> int:
    started = time.monotonic()
    print("Starting the local stack (Azurite, Azure ML emulator, bridge dev host, Airflow 3)...")
    try:
        with running_stack(options) as stack:
            print(f"  stack up in {time.monotonic() - started:.1f}s")
            print(f"  Azure ML emulator profile: {stack.emulator.profile.name}")
            print(f"  the bridge signs in to Airflow {sign_in(stack.settings)}")
            if stack.key_vault is not None:
                secret, vault = stack.settings.signing_key_secret, stack.key_vault.url
                print(f"  the signing key: secret {secret!r} in Key Vault {vault}, read with the "
                      "identity, rotating itself")  # fmt: skip
            try:
                steps, details, job_name = follow_one_job(stack, timeout)
                print_timeline(steps)
                print(f"\nThe consumer DAG logged: {details}")
                print_trail(stack, job_name)
                steps, details = follow_a_cancellation(stack, timeout)
                print_timeline(steps, "A long job, canceled in Azure ML Studio")
                print(f"\nThe failure DAG logged: {details}")
            except DemoFailed as exc:
                print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
                _explore(stack, keep)
                return 1
            _explore(stack, keep)
    except KeyboardInterrupt:
        print("\nStopped.")
        return 130
    print(f"Demo finished in {time.monotonic() - started:.1f}s; every process stopped.")
    return 0


def sign_in(settings: Settings) -> str:
    """How the bridge signs in to Airflow, said without any secret."""
    if settings.airflow_auth == ENTRA:
        return (
            f"with managed identity {settings.managed_identity_client_id}'s Entra ID token for "
            f"{settings.airflow_audience}: no Airflow password or token in its settings"
        )
    return f"as user {settings.airflow_username} (its password in its settings)"


def follow_one_job(stack: Stack, timeout: float) -> tuple[list[Step], str, str]:
    """The producer DAG's job, followed to the consumer DAG: the timeline, the consumer's log
    line, and the job's name."""
    airflow = stack.airflow
    assert airflow is not None
    airflow.wait_for_dags([PRODUCER, CONSUMER], timeout=60)
    before = {run.dag_run_id for run in airflow.runs(CONSUMER)}
    print(f"Triggering {PRODUCER} and following the submission...")
    t0, run_id, job_name = _produce(airflow, PRODUCER)
    consumer_run, line = _consumed(
        airflow, CONSUMER, CONSUMER_TASK, job_name, before=before, timeout=timeout
    )
    if "Azure ML job" not in line:
        raise DemoFailed(f"the consumer's log does not report job {job_name}: {line}")
    return _timeline(stack, t0, run_id, job_name, consumer_run), line, job_name


def follow_a_cancellation(stack: Stack, timeout: float) -> tuple[list[Step], str]:
    """Submit a long job, cancel it as a user would in Studio, follow it to the failure DAG."""
    airflow = stack.airflow
    assert airflow is not None
    airflow.wait_for_dags([LONG_PRODUCER, FAILURE_CONSUMER], timeout=60)
    before = {run.dag_run_id for run in airflow.runs(FAILURE_CONSUMER)}
    print(f"\nTriggering {LONG_PRODUCER}; its job is canceled once it runs...")
    t0, _, job_name = _produce(airflow, LONG_PRODUCER)
    try:
        stack.emulator.wait_for_status(job_name, ["Running"], timeout=30)
    except TimeoutError as exc:
        raise DemoFailed(str(exc)) from exc
    canceled_at = _now()
    _studio(stack).cancel(job_name)
    consumer_run, line = _consumed(
        airflow, FAILURE_CONSUMER, FAILURE_TASK, job_name, before=before, timeout=timeout
    )
    steps = [
        Step(t0, f"producer DAG {LONG_PRODUCER} triggered", "you, REST API"),
        Step(canceled_at, "a user cancels the job in Azure ML Studio", "Studio user"),
        *_job_steps(stack, job_name, statuses=("Running", "CancelRequested", "Canceled")),
        *_run_steps(airflow, FAILURE_CONSUMER, consumer_run, "logged the cancellation"),
    ]
    return sorted(steps, key=lambda step: step.at), line


def _produce(airflow: LocalAirflow, producer: str) -> tuple[datetime, str, str]:
    """Trigger a producer DAG; its start, run id and the job name its submit task returned."""
    t0 = _now()
    run_id = airflow.trigger(producer)
    if airflow.wait_for_run(producer, run_id, timeout=60) != "success":
        raise DemoFailed(f"{producer} run {run_id} did not succeed; see the Airflow UI")
    return t0, run_id, str(airflow.xcom(producer, run_id, PRODUCER_TASK, "return_value"))


def _consumed(
    airflow: LocalAirflow,
    consumer: str,
    task: str,
    job_name: str,
    *,
    before: set[str],
    timeout: float,
) -> tuple[str, str]:
    """The consumer run that the job's asset event started, once it succeeded, and its log line.
    Other new runs (another job's event, while tests share the stack) are passed over."""
    seen: set[str] = set(before)

    def mine() -> tuple[str, str] | None:
        for run in airflow.runs(consumer):
            if run.dag_run_id in seen:
                continue
            state = airflow.wait_for_run(consumer, run.dag_run_id, timeout=60)
            if state != "success":
                raise DemoFailed(f"{consumer} run {run.dag_run_id} ended {state}")
            seen.add(run.dag_run_id)
            log_text = airflow.task_log(consumer, run.dag_run_id, task)
            line = next((ln for ln in log_text.splitlines() if job_name in ln), None)
            if line is not None:
                return run.dag_run_id, line.strip()
        return None

    return _wait(mine, timeout, f"no {consumer} run logged job {job_name}")


def _studio(stack: Stack) -> AzureMLJobs:
    """What a user's Studio session does to a job: the same jobs API, through azure-ai-ml."""
    return azureml_jobs(stack.settings)


def _job_steps(stack: Stack, job_name: str, statuses: tuple[str, ...]) -> list[Step]:
    """What the bridge and Azure ML did for one job, each asset event with who found it."""
    steps = []
    record = stack.bridge.ledger.get_job(job_name)
    if record and record.accepted_at:
        steps.append(Step(_parse(record.accepted_at), "bridge accepted the submission (policy ok)",
                          "bridge on_submission"))  # fmt: skip
    job = stack.emulator.job(job_name)
    if job is not None:
        steps.append(Step(_parse(job.created_at), f"Azure ML job {job_name} created", "Azure ML"))
        for status, _, wall in job.history:
            if status in statuses:
                at = datetime.fromtimestamp(wall, UTC)
                steps.append(Step(at, f"job {_spoken(status)} in Azure ML", "Azure ML"))
    found_by = _FOUND_BY.get(record.via or "", "") if record else ""
    function = _FUNCTION.get(record.via or "", "bridge") if record else "bridge"
    for effect in stack.bridge.ledger.effects(job_name):
        if effect.state is EffectState.COMPLETED and effect.updated_at:
            what = f"asset event posted on {effect.target}"
            steps.append(Step(_parse(effect.updated_at), f"{what} ({found_by})", function))
    return steps


def _run_steps(airflow: LocalAirflow, dag_id: str, run_id: str, did: str) -> list[Step]:
    run = next((r for r in airflow.runs(dag_id) if r.dag_run_id == run_id), None)
    steps = []
    if run is not None and run.start_date:
        steps.append(Step(run.start_date, f"consumer DAG {dag_id} started", "Airflow scheduler"))
    if run is not None and run.end_date:
        steps.append(Step(run.end_date, f"consumer DAG {dag_id} succeeded and {did}",
                          "Airflow worker"))  # fmt: skip
    return steps


def _spoken(status: str) -> str:
    return {"CancelRequested": "cancel requested"}.get(status, status.lower())


def _timeline(
    stack: Stack, t0: datetime, run_id: str, job_name: str, consumer_run: str
) -> list[Step]:
    airflow = stack.airflow
    assert airflow is not None
    steps = [Step(t0, f"producer DAG {PRODUCER} triggered through the REST API", "you, REST API")]
    from airflow_client.client import TaskInstanceApi

    submit = TaskInstanceApi(airflow.client()).get_task_instance(PRODUCER, run_id, PRODUCER_TASK)
    if submit.start_date and submit.end_date:
        took = (submit.end_date - submit.start_date).total_seconds()
        log_text = airflow.task_log(PRODUCER, run_id, PRODUCER_TASK)
        sent = SUBMITTED_IN.search(log_text)
        operator = f"operator {sent.group(1)} ms, " if sent else ""
        steps.append(Step(submit.start_date, "submit task started", "Airflow worker"))
        steps.append(
            Step(
                submit.end_date,
                f"submission queued ({operator}task instance {took:.2f}s)",
                "Airflow worker",
            )
        )
    steps += _job_steps(stack, job_name, statuses=("Running", "Completed", "Failed", "Canceled"))
    steps += _run_steps(airflow, CONSUMER, consumer_run, "logged the job")
    return sorted(steps, key=lambda step: step.at)


def print_timeline(steps: list[Step], title: str = "Timeline") -> None:
    t0 = steps[0].at
    width = max(len(step.who) for step in steps)
    print(f"\n{title}")
    for step in steps:
        print(f"  +{(step.at - t0).total_seconds():6.2f}s  {step.who:<{width}}  {step.what}")


def print_trail(stack: Stack, job_name: str) -> None:
    """The job's audit trail as `bridge show` prints it: each call and decision, one trace."""
    records = stack.bridge.ledger.trail(job_name)
    traces = sorted({str(entry.get("trace_id")) for entry in records})
    print(
        f"\nAudit trail of {job_name} (trace {', '.join(traces) or '-'}; `bridge show` prints it)"
    )
    rows = [TRAIL_HEADER, *(trail_row(entry) for entry in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TRAIL_HEADER))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


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
