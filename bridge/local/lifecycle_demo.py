"""`make demo LIFECYCLE=1`: a model from training to production, offline, with a timeline.

Starts the local stack with a second workspace, production, that has a bridge of its own (its queue
`submissions-prod`, reached through the Airflow connection `azureml_bridge_prod`), triggers
`azureml_train_to_prod` (examples/dags/azureml_train_to_prod.py) and follows each step through
Airflow's REST API: the DAG run, the submission its task sent, what the bridge and Azure ML did
with it, and the asset event that started the next step, with who found the outcome (`via`: an
Azure ML or ARM event, the reconcile sweep, or the operation's own call). With `AZURE=observed`
ARM raises its write events as a write is accepted and none when it ends, so every deployment and
traffic change is found by the sweep. Exits 0 only when `azureml_lifecycle_in_production`
succeeded; 1 naming the step that got stuck otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from bridge.contracts import TAG_SUBMISSION
from bridge.ledger import JobRecord
from bridge.local.airflow import LocalAirflow
from bridge.local.azureml import AzureMLEmulator
from bridge.local.demo import DemoFailed, Step, print_timeline
from bridge.local.stack import Stack, StackOptions, Workspace, running_stack
from bridge.service import Bridge

PRODUCTION_WORKSPACE = "local-workspace-prod"
REGISTRY = "bridge-demo-registry"
_LIFECYCLE = "azureml://bridge-demo/lifecycle"
FAILED_ASSET = f"{_LIFECYCLE}/failed"
FAILURE_DAG = "azureml_lifecycle_failed"
# What the example does, and no more: the governance a platform team would set for it. A model
# is deployed only if it says which job trained it.
POLICY: dict[str, Any] = {
    "allowed_computes": ["cpu-cluster"],
    "allowed_operations": ["register_model", "deploy", "set_traffic", "share_model"],
    "allowed_endpoints": ["bridge-demo", "bridge-demo-prod"],
    "allowed_instance_types": ["Standard_DS3_v2"],
    "max_instance_count": 2,
    "allowed_model_prefixes": ["bridge-demo-"],
    "allowed_registries": [REGISTRY],
    "required_model_tags": {"trained_by": None},
    "allowed_asset_prefixes": ["azureml://bridge-demo/"],
}
# A deployment is up to three ARM writes (endpoint, deployment, traffic). When no event says that
# one ended (AZURE=observed), the sweep finds it: every second, first 1 s after acceptance and
# doubling, so a deployment is seconds behind, not the minutes of Azure's defaults. Under the
# other profiles the stack's own sweep (5 s) stays behind the events it backs up.
SWEEP_ONLY = {"observed"}
RECONCILE_SCHEDULE = "* * * * * *"
RECONCILE_AFTER_SECONDS = 1.0
# Which of a bridge's functions posts the asset event, by who found the outcome.
_FUNCTION = {"event": "on_azureml_event", "reconcile": "reconcile", "call": "on_submission"}
_FOUND_BY = {
    "event": "an Azure ML event",
    "reconcile": "the reconcile sweep: no event told it",
    "call": "the operation's own call",
}
_ARM = ("deploy", "set_traffic")  # completed by ARM resource writes, not by a call or a job
_SENT_IN = re.compile(r"Submitted Azure ML (?:job|operation) .* in (\d+) ms")
T = TypeVar("T")


@dataclass(frozen=True)
class Stage:
    """One DAG of the example: the task that does its work and the asset its outcome lands on."""

    dag_id: str
    task_id: str
    does: str
    asset: str | None  # None: the end of the line
    sends: bool = True  # sends a submission to a bridge (the smoke test only reads events)
    production: bool = False  # its submission goes to the production workspace's bridge


STAGES = (
    Stage("azureml_train_to_prod", "train", "train the model (an Azure ML job)",
          f"{_LIFECYCLE}/train/completed"),
    Stage("azureml_lifecycle_register", "register", "register the job's output as a model",
          f"{_LIFECYCLE}/register/completed"),
    Stage("azureml_lifecycle_stage", "deploy_green", "deploy it to bridge-demo/green at 0 %",
          f"{_LIFECYCLE}/stage/completed"),
    Stage("azureml_lifecycle_smoke_test", "smoke_test", "check from events that green serves it",
          f"{_LIFECYCLE}/smoke-test/passed", sends=False),
    Stage("azureml_lifecycle_promote", "shift_traffic", "shift all traffic to green",
          f"{_LIFECYCLE}/promote/completed"),
    Stage("azureml_lifecycle_share", "share", f"share the model to {REGISTRY}",
          f"{_LIFECYCLE}/share/completed"),
    Stage("azureml_lifecycle_production", "deploy_production",
          "deploy the registry's copy in the production workspace",
          f"{_LIFECYCLE}/production/completed", production=True),
    Stage("azureml_lifecycle_in_production", "announce", "log what production serves", None,
          sends=False),
)  # fmt: skip


@dataclass
class Followed:
    """What following the example found: the timeline, each asset event's `extra` by stage,
    and the last DAG's log line."""

    steps: list[Step]
    extras: dict[str, dict[str, Any]]
    announced: str


def options(base: StackOptions | None = None) -> StackOptions:
    """The stack the lifecycle demo needs: a production workspace, the demo's policy and a sweep
    quick enough for deployments no event reports."""
    base = base or StackOptions()
    chosen = dataclasses.replace(
        base, production_workspace=PRODUCTION_WORKSPACE, policy_json=json.dumps(POLICY)
    )
    if base.azure_profile in SWEEP_ONLY:
        chosen.reconcile_schedule = RECONCILE_SCHEDULE
        chosen.reconcile_after_seconds = RECONCILE_AFTER_SECONDS
    return chosen


def run(options: StackOptions, *, keep: bool = False, timeout: float = 240.0) -> int:
    started = time.monotonic()
    print("Starting the local stack with two workspaces (Azurite, Service Bus, two Azure ML "
          "emulators and two bridges, Airflow 3)...")  # fmt: skip
    try:
        with running_stack(options) as stack:
            print(f"  stack up in {time.monotonic() - started:.1f}s")
            production = _production(stack)
            print(f"  Azure ML emulator profile: {stack.emulator.profile.name} (both workspaces); "
                  f"reconcile sweep {stack.settings.reconcile_schedule!r}, first "
                  f"{stack.settings.reconcile_after_seconds:g}s after a submission")  # fmt: skip
            print(f"  staging {stack.emulator.workspace}, queue {stack.queue_name}; production "
                  f"{production.emulator.workspace}, queue {production.queue_name} "
                  "(connection azureml_bridge_prod)")  # fmt: skip
            try:
                followed = follow(stack, timeout)
            except DemoFailed as exc:
                print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
                _explore(stack, keep)
                return 1
            print_timeline(followed.steps, "From training to production")
            _summary(followed)
            _explore(stack, keep)
    except KeyboardInterrupt:
        print("\nStopped.")
        return 130
    print(f"Demo finished in {time.monotonic() - started:.1f}s; every process stopped.")
    return 0


def follow(stack: Stack, timeout: float) -> Followed:
    """Trigger the example and follow each stage to the next, within `timeout` seconds in all.
    Raises DemoFailed naming the stage that got stuck, and why as far as Airflow and the bridges
    tell."""
    airflow = stack.airflow
    assert airflow is not None
    stack.emulator.registries.add(REGISTRY)  # the production workspace shares it
    airflow.wait_for_dags([stage.dag_id for stage in STAGES] + [FAILURE_DAG], timeout=90)
    deadline = time.monotonic() + timeout
    before = {stage.dag_id: {run.dag_run_id for run in airflow.runs(stage.dag_id)}
              for stage in STAGES}  # fmt: skip
    first = STAGES[0]
    print(f"Triggering {first.dag_id} and following it to production...")
    t0 = datetime.now(UTC)
    triggered = airflow.trigger(first.dag_id)
    steps = [Step(t0, f"{first.dag_id} triggered", "you, REST API")]
    extras: dict[str, dict[str, Any]] = {}
    announced = ""
    for stage in STAGES:
        run_id = triggered if stage is first else _new_run(stack, stage, before, deadline)
        steps += _run(stack, stage, run_id, deadline)
        name = str(airflow.xcom(stage.dag_id, run_id, stage.task_id)) if stage.sends else None
        if stage.asset is None:
            announced = _logged(airflow, stage, run_id, "production serves")
            continue
        event = _asset_event(stack, stage, run_id, name, deadline)
        extras[stage.dag_id] = dict(event.extra or {})
        steps.append(_posted(stage, event))
        if name is not None:  # read once the outcome is posted: everything is recorded by then
            steps += _bridge_steps(stack, stage, name)
    return Followed(sorted(steps, key=lambda step: step.at), extras, announced)


def _production(stack: Stack) -> Workspace:
    if stack.production is None:
        raise DemoFailed("the stack has no production workspace: start it with options()")
    return stack.production


def _new_run(stack: Stack, stage: Stage, before: dict[str, set[str]], deadline: float) -> str:
    """The stage's run that the previous stage's asset event started."""
    airflow = stack.airflow
    assert airflow is not None

    def started() -> str | None:
        _failures(stack)
        fresh = [r.dag_run_id for r in airflow.runs(stage.dag_id)
                 if r.dag_run_id not in before[stage.dag_id]]  # fmt: skip
        return fresh[0] if fresh else None

    return _until(started, deadline, lambda: f"stuck at {stage.dag_id}: Airflow started no run")


def _run(stack: Stack, stage: Stage, run_id: str, deadline: float) -> list[Step]:
    """The run, once it succeeded: when it started and when its task sent its work."""
    airflow = stack.airflow
    assert airflow is not None
    from airflow_client.client import TaskInstanceApi

    try:
        state = airflow.wait_for_run(stage.dag_id, run_id, max(deadline - time.monotonic(), 1))
    except TimeoutError as exc:
        raise DemoFailed(f"stuck at {stage.dag_id}: {exc}") from exc
    if state != "success":
        raise DemoFailed(f"stuck at {stage.dag_id}: its run {run_id} ended {state}; "
                         f"{_task_failure(airflow, stage, run_id)}")  # fmt: skip
    dag_run = next(r for r in airflow.runs(stage.dag_id) if r.dag_run_id == run_id)
    steps = []
    if dag_run.start_date and stage is not STAGES[0]:
        steps.append(Step(dag_run.start_date, f"{stage.dag_id} started", "Airflow scheduler"))
    task = TaskInstanceApi(airflow.client()).get_task_instance(stage.dag_id, run_id, stage.task_id)
    if task.start_date and task.end_date:
        details = f"task {(task.end_date - task.start_date).total_seconds():.2f}s"
        what = f"{stage.task_id}: {stage.does}"
        if stage.sends:
            what = f"{stage.task_id}: sends a submission to {stage.does}"
            sent = _SENT_IN.search(airflow.task_log(stage.dag_id, run_id, stage.task_id))
            details = f"sent in {sent.group(1)} ms, {details}" if sent else details
        steps.append(Step(task.start_date, f"{what} ({details})", "Airflow worker"))
    return steps


def _bridge_steps(stack: Stack, stage: Stage, name: str) -> list[Step]:
    """What the stage's bridge and Azure ML did with its submission, as far as they record it."""
    workspace = _production(stack) if stage.production else None
    bridge = workspace.bridge if workspace else stack.bridge
    emulator = workspace.emulator if workspace else stack.emulator
    azure = "production Azure ML" if workspace else "Azure ML"
    steps = []
    record = bridge.ledger.get_job(name)
    if record is not None and record.accepted_at:
        kind = record.submission.kind if record.submission.operation else "job"
        steps.append(Step(datetime.fromisoformat(record.accepted_at),
                          f"accepted {kind} {name} (policy ok)",
                          _who(stage, "on_submission")))  # fmt: skip
    steps += _arm_writes(emulator, azure, name)
    job = emulator.job(name)
    if job is not None:
        steps.append(Step(datetime.fromisoformat(job.created_at), "job created", azure))
        for status, _, wall in job.history:
            if status in ("Running", "Completed", "Failed", "Canceled"):
                at = datetime.fromtimestamp(wall, UTC)
                steps.append(Step(at, f"job {status.lower()}", azure))
    return steps


def _arm_writes(emulator: AzureMLEmulator, azure: str, name: str) -> list[Step]:
    """The online endpoint and deployment writes the submission made (each carries its name)."""
    steps = []
    for request in emulator.requests:
        tags = request.body.get("tags") if isinstance(request.body, dict) else None
        _, online, resource = request.path.partition("/onlineEndpoints/")
        if request.method == "PUT" and online and (tags or {}).get(TAG_SUBMISSION) == name:
            at = datetime.fromtimestamp(request.time, UTC)
            steps.append(Step(at, f"ARM write of {resource} accepted", f"{azure} (ARM)"))
    return steps


def _asset_event(stack: Stack, stage: Stage, run_id: str, name: str | None, deadline: float) -> Any:
    """The asset event the stage's outcome posted: the bridge's for its submission, or Airflow's
    own outlet event for the run."""
    assert stage.asset is not None
    airflow = stack.airflow
    assert airflow is not None

    def mine(event: Any) -> bool:
        if name is None:
            return bool(event.source_dag_id == stage.dag_id and event.source_run_id == run_id)
        return bool((event.extra or {}).get("job_name") == name)

    def posted() -> Any:
        _failures(stack)
        return next((e for e in _events(airflow, stage.asset or "") if mine(e)), None)

    def why() -> str:
        found = f"stuck at {stage.dag_id}: no asset event on {stage.asset}"
        return found if name is None else f"{found} for {name}; {_ledger_says(stack, stage, name)}"

    return _until(posted, deadline, why)


def _posted(stage: Stage, event: Any) -> Step:
    extra = dict(event.extra or {})
    short = (stage.asset or "").removeprefix(f"{_LIFECYCLE}/")
    via = extra.get("via")
    if via is None:
        return Step(event.timestamp, f"asset event {short} (Airflow's own outlet)",
                    "Airflow worker")  # fmt: skip
    found_by = _FOUND_BY.get(via, via)
    if via == "event" and extra.get("operation") in _ARM:
        found_by = "an ARM resource write event"
    what = f"asset event {short}: {extra.get('status')}, via {via} ({found_by})"
    return Step(event.timestamp, what, _who(stage, _FUNCTION.get(via, "bridge")))


def _who(stage: Stage, function: str) -> str:
    return f"{'production' if stage.production else 'staging'} bridge {function}"


def _failures(stack: Stack) -> None:
    """A step's failure or refusal, reported on the example's failure asset, ends the demo."""
    airflow = stack.airflow
    assert airflow is not None
    ours = {stage.dag_id for stage in STAGES}
    for event in _events(airflow, FAILED_ASSET):
        extra = dict(event.extra or {})
        step = (extra.get("origin") or {}).get("dag_id")
        if step in ours:
            what = extra.get("operation") or "job"
            reason = extra.get("reason") or extra.get("studio_url") or "see `bridge show`"
            raise DemoFailed(f"stuck at {step}: its {what} ended {extra.get('status')}: {reason}")


def _events(airflow: LocalAirflow, uri: str) -> list[Any]:
    from airflow_client.client import AssetApi

    asset_id = airflow.rest().asset_id(uri)
    page = AssetApi(airflow.client()).get_asset_events(asset_id=asset_id, limit=100)
    return list(page.asset_events)


def _ledger_says(stack: Stack, stage: Stage, name: str) -> str:
    bridge: Bridge = _production(stack).bridge if stage.production else stack.bridge
    record: JobRecord | None = bridge.ledger.get_job(name)
    if record is None:
        return "the bridge has no record of it (is its dev host reading the queue?)"
    facts = [f"state {record.state.value}"]
    facts += [f"{key} {value}" for key, value in (("step", record.step),
              ("blocked", record.blocked), ("reason", record.reason)) if value]  # fmt: skip
    return "the bridge's ledger says: " + ", ".join(facts)


def _task_failure(airflow: LocalAirflow, stage: Stage, run_id: str) -> str:
    log_text = airflow.task_log(stage.dag_id, run_id, stage.task_id)
    errors = [line.strip() for line in log_text.splitlines() if "ERROR" in line or "Error" in line]
    return errors[-1] if errors else "see the task's log in the Airflow UI"


def _logged(airflow: LocalAirflow, stage: Stage, run_id: str, marker: str) -> str:
    log_text = airflow.task_log(stage.dag_id, run_id, stage.task_id)
    line = next((ln.strip() for ln in log_text.splitlines() if marker in ln), None)
    if line is None:
        raise DemoFailed(f"stuck at {stage.dag_id}: its log does not say {marker!r}")
    return line


def _summary(followed: Followed) -> None:
    extras = followed.extras
    vias = Counter(str(extra["via"]) for extra in extras.values() if extra.get("via"))
    staged = extras["azureml_lifecycle_stage"].get("result") or {}
    production = extras["azureml_lifecycle_production"].get("result") or {}
    print(f"\nModel {staged.get('model')}: staged at {staged.get('scoring_uri')}; in production as "
          f"{production.get('model')}")  # fmt: skip
    print(f"  at {production.get('scoring_uri')} (traffic {production.get('traffic')})")
    print("Outcomes found by: " + ", ".join(f"{via} {n}" for via, n in sorted(vias.items())))
    print(f"{STAGES[-1].dag_id} logged: {followed.announced}")


def _explore(stack: Stack, keep: bool) -> None:
    airflow = stack.airflow
    if airflow is not None:
        print(f"\nAirflow UI: {airflow.base_url}  (user {airflow.username}, "
              f"password {airflow.password})")  # fmt: skip
    print(f"Staging Azure ML emulator: {stack.emulator.endpoint}  webhook: "
          f"{stack.devhost.webhook_url}")  # fmt: skip
    if stack.production is not None:
        print(f"Production Azure ML emulator: {stack.production.emulator.endpoint}  webhook: "
              f"{stack.production.devhost.webhook_url}")  # fmt: skip
    if keep:
        print("The stack stays up (KEEP=1). Press Ctrl-C to stop it.")
        while True:
            time.sleep(3600)


def _until(probe: Callable[[], T | None], deadline: float, failure: Callable[[], str]) -> T:
    from airflow_client.client.exceptions import ServiceException

    while True:
        try:
            found = probe()
        except ServiceException:
            found = None  # SQLite-backed Airflow answers 500 now and then while tasks write
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise DemoFailed(failure())
        time.sleep(0.5)
