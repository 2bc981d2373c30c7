"""Deploying a model to a managed online endpoint: the Azure ML provider's blocking tasks against
the bridge, in worker-seconds, Azure ML calls and how late Airflow learns that it is done.

Every deployment here is the same three ARM long-running writes: create the endpoint, create
the deployment, give it 100 % of the traffic. The emulator runs each write for
`Options.online_seconds` and answers its operation status with `Retry-After: 1`.

Measured in this run, against the emulator of the local stack:

- `provider`: what a DAG does with Microsoft's Airflow provider for Azure ML
  (Azure/airflow-provider-azure-machinelearning: `AzureMachineLearningCreateEndpointOperator`
  looks the endpoint up, then `online_endpoints.begin_create_or_update(endpoint)` and, with
  `waiting=True`, blocks on it; `AzureMachineLearningDeployEndpointOperator` does the same with
  `ml_client.begin_create_or_update(deployment)`; it has no traffic operator, so the traffic is
  set as Learn's SDK tab does: `get`, `traffic = {...}`, `begin_create_or_update(...).result()`).
  Each blocking call is timed (worker-seconds) and its requests counted at the emulator.
- `bridge, ARM events`: the submission as `DeployAzureMLModelOperator` sends it, through the
  local Service Bus to the stack's bridge, which starts each write and returns; the write's
  `ResourceWriteSuccess` at completion (profile `documented`) advances it; the asset event is
  the end. Measured: the requests it made, and the last write's end (its event's time) → the
  asset event in Airflow.
- `bridge, sweep only`: the same with no ARM event at all (`arm_events="none"`): the reconcile
  sweep advances it, one step a check. A bridge of its own (built from the stack's settings, on
  a ledger table of its own) has its clock moved to each check's due time (`Bridge.clock`, the
  seam the chaos run uses), so that the backoff the ledger records is the real one while the
  writes take seconds. Measured: each check's requests and what it did, and the last check's
  start → the asset event in Airflow.
- The operator's own work: build and validate the submission, send it (as bench/calls.py).

Computed from those for deployments of 5, 10 and 20 minutes (Learn: "up to 15 minutes,
depending on whether the underlying environment or image is being built for the first time"),
the endpoint's and the traffic's writes taken as 1 minute each (assumed: no source gives them):
the provider's status reads at the SDK's own intervals (the deployment's poller:
`LROConfigurations.POLL_INTERVAL`, 5 s; the endpoint's: the generated client's
`polling_interval`, 30 s; a `Retry-After` from the service would override either, and none is
documented for these operations); the bridge's sweep checks on the Azure schedule (a timer every
5 minutes; each write first due a minute after it began, `Bridge.retry_base`, then backing off
to five minutes, as bridge.reconcile does for operations in flight).
"""

from __future__ import annotations

import contextlib
import io
import math
import secrets
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from bench.calls import GRACE_SECONDS, OPERATOR_QUEUE
from bench.report import table
from bridge.composition import azureml_jobs, build
from bridge.contracts import Submission
from bridge.events import RESOURCE_WRITE_SUCCESS
from bridge.ledger import JobRecord, Ledger
from bridge.local.azureml.endpoints import OPERATION_ROUTE, TERMINAL
from bridge.local.stack import Stack
from bridge.operations import RegisterModel
from bridge.provider.senders import ServiceBusSender
from bridge.reconcile import OPERATION_MAX_BACKOFF_SECONDS, Reconciler
from bridge.runner import DEPLOYMENT, ENDPOINT, TRAFFIC
from bridge.service import Bridge

DURATIONS = {"5 minutes": 300.0, "10 minutes": 600.0, "20 minutes": 1200.0}
OTHER_WRITE_SECONDS = 60.0  # the endpoint's creation and the traffic change: assumed
ENDPOINT_POLL_SECONDS = 30.0  # azure-ai-ml's generated ARM client: polling_interval default
TIMER_SECONDS = 300.0  # the reconcile timer in Azure: "0 */5 * * * *"
RETRY_BASE_SECONDS = min(GRACE_SECONDS, 60.0)  # `Bridge.retry_base` in Azure
# When the first check falls after the row is due: the submission lands anywhere between two
# timer runs, so on average half a period late. Later checks fall on timer runs (their delays
# are multiples of 5 minutes).
TIMER_PHASE_SECONDS = TIMER_SECONDS / 2
DEPLOYMENT_NAME = "blue"
INSTANCE_TYPE = "Standard_DS3_v2"
PEERS = {
    "provider": "provider tasks, blocking",
    "events": "bridge, ARM events",
    "sweep": "bridge, sweep only",
}


@dataclass(frozen=True)
class Options:
    online_seconds: float  # each emulated write: Creating/Updating → Succeeded
    rounds: int  # deployments each way (the sweep's: one)
    sends: int  # operator sends timed


FULL = Options(online_seconds=4.0, rounds=3, sends=20)
QUICK = Options(online_seconds=1.0, rounds=1, sends=5)


def deployment_poll_seconds() -> float:
    """azure-ai-ml's interval between status reads of a deployment's write (no Retry-After)."""
    from azure.ai.ml.constants._common import LROConfigurations

    return float(LROConfigurations.POLL_INTERVAL)


def status_reads(seconds: float, interval: float) -> int:
    """Reads of an operation status, one per interval, until one finds the write ended."""
    return math.floor(seconds / interval) + 1


def run(stack: Stack, options: Options, uris: Sequence[str]) -> dict[str, Any]:
    assert stack.airflow is not None
    online = stack.emulator.online
    before = online.online_seconds
    online.online_seconds = options.online_seconds
    phases: dict[str, float] = {}
    clock = time.monotonic()

    def lap(phase: str) -> None:
        nonlocal clock
        phases[phase] = round(time.monotonic() - clock, 1)
        clock = time.monotonic()

    try:
        model = _registered_model(stack)
        free = list(reversed(uris))  # load assets: nobody consumes them
        lap("register a model")
        send = _operator_send_seconds(stack, options.sends, model, free[0])
        lap("operator sends")
        provider = [_provider_deploy(stack, model) for _ in range(options.rounds)]
        lap("provider")
        events = [_bridge_deploy(stack, model, free.pop()) for _ in range(options.rounds)]
        lap("bridge, ARM events")
        sweep = _swept_deploy(stack, model, free.pop())
        lap("bridge, sweep only")
    finally:
        online.online_seconds = before
    measured = _measured(options, send, provider, events, sweep)
    return {
        "measurements": measured,
        "rows": _rows(measured),
        "assumptions": {
            "endpoint_and_traffic_write_seconds": OTHER_WRITE_SECONDS,
            "deployment_poll_seconds": deployment_poll_seconds(),
            "endpoint_poll_seconds": ENDPOINT_POLL_SECONDS,
            "reconcile_after_seconds": GRACE_SECONDS,
            "timer_seconds": TIMER_SECONDS,
            "first_check_late_by_seconds": TIMER_PHASE_SECONDS,
        },
        "phase_seconds": phases,
        "provider_rounds": provider,
        "bridge_rounds": events,
        "sweep_checks": sweep["checks"],
    }


# -- the provider's way -------------------------------------------------------------------------


def _provider_deploy(stack: Stack, model: str) -> dict[str, Any]:
    """One deployment as the provider's tasks make it, each blocking until its write ends."""
    from azure.ai.ml.entities import ManagedOnlineDeployment, ManagedOnlineEndpoint
    from azure.core.exceptions import ResourceNotFoundError

    # The MLClient the bridge's adapter builds: the same SDK, pointed at the emulator.
    client = azureml_jobs(stack.settings)._ml_client()
    endpoint = _endpoint_name()

    def create_endpoint() -> None:
        try:
            client.online_endpoints.get(endpoint)  # the operator looks first
        except ResourceNotFoundError:
            created = ManagedOnlineEndpoint(name=endpoint, auth_mode="key")
            client.online_endpoints.begin_create_or_update(created).wait()

    def create_deployment() -> None:
        deployment = ManagedOnlineDeployment(
            name=DEPLOYMENT_NAME, endpoint_name=endpoint, model=f"azureml:{model}",
            instance_type=INSTANCE_TYPE, instance_count=1,
        )  # fmt: skip
        client.begin_create_or_update(deployment).wait()

    def shift_traffic() -> None:
        found = client.online_endpoints.get(endpoint)
        found.traffic = {DEPLOYMENT_NAME: 100}
        client.online_endpoints.begin_create_or_update(found).result()

    steps = [
        _blocking(stack, "endpoint", create_endpoint),
        _blocking(stack, "deployment", create_deployment),
        _blocking(stack, "traffic", shift_traffic),
    ]
    state = stack.emulator.online.endpoint(endpoint)
    if state is None or state["properties"]["traffic"] != {DEPLOYMENT_NAME: 100}:
        raise RuntimeError(f"the provider's deployment to {endpoint} did not take the traffic")
    return {
        "endpoint": endpoint,
        "steps": steps,
        "worker_seconds": round(sum(s["seconds"] for s in steps), 3),
        "calls": sum(s["calls"] for s in steps),
        "status_reads": sum(s["status_reads"] for s in steps),
    }


def _blocking(stack: Stack, step: str, call: Callable[[], None]) -> dict[str, Any]:
    requests = stack.emulator.requests
    before = len(requests)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # azure-ai-ml prints a dot per status read
        call()
    seconds = time.perf_counter() - started
    made = requests[before:]
    return {
        "step": step,
        "seconds": round(seconds, 3),
        "calls": len(made),
        "status_reads": sum(1 for r in made if OPERATION_ROUTE.match(r.path)),
        "requests": _kinds(made),
    }


# -- the bridge's way, with ARM events ----------------------------------------------------------


def _bridge_deploy(stack: Stack, model: str, uri: str) -> dict[str, Any]:
    """One deployment through the stack's bridge: sent as the operator sends it; done when the
    asset event is in Airflow."""
    endpoint = _endpoint_name()
    submission = _deploy_submission(endpoint, model, uri)
    requests = stack.emulator.requests
    before = len(requests)
    started = time.time()
    sender = ServiceBusSender(stack.servicebus.address, stack.queue_name, development_emulator=True)
    try:
        sender.send(submission)
    finally:
        sender.close()
    record = _concluded(
        stack.bridge.ledger, submission.id, timeout=60 + 10 * _writes_seconds(stack)
    )
    made = requests[before:]
    posted = _asset_event_time(stack, uri, submission.id)
    ended = _last_write_end(stack, endpoint)
    return {
        "endpoint": endpoint,
        "via": record.via,
        "outcome": record.state.value,
        "calls": len(made),
        "requests": _kinds(made),
        "last_write_to_asset_event_s": round(posted - ended, 3),
        "send_to_asset_event_s": round(posted - started, 3),
    }


def _last_write_end(stack: Stack, endpoint: str) -> float:
    """When the endpoint's last write ended: the time of its last ResourceWriteSuccess."""
    ends = []
    for delivery in stack.emulator.events:
        event = delivery.event
        kind = event.get("eventType") or event.get("type")
        subject = str(event.get("subject") or "")
        if kind == RESOURCE_WRITE_SUCCESS and subject.endswith(f"/onlineEndpoints/{endpoint}"):
            ends.append(datetime.fromisoformat(str(event.get("eventTime") or event["time"])))
    if not ends:
        raise RuntimeError(f"no ResourceWriteSuccess for endpoint {endpoint}")
    return max(ends).timestamp()


# -- the bridge's way, with no event: the sweep -------------------------------------------------


def _swept_deploy(stack: Stack, model: str, uri: str) -> dict[str, Any]:
    """One deployment that no ARM event announces, advanced by sweeps alone, each run when the
    ledger says the deployment is next due (the clock moved there). One check is made while the
    deployment's write still runs, to measure what a check that finds nothing new costs."""
    emulator = stack.emulator
    table_name = f"benchdeploys{secrets.token_hex(4)}"  # its own: the sweep sees only this row
    sweeper = build(replace(stack.settings, ledger_table=table_name))
    ahead = [0.0]  # seconds the sweeper's clock is ahead of this machine's
    sweeper.clock = lambda: time.time() + ahead[0]
    endpoint = _endpoint_name()
    submission = _deploy_submission(endpoint, model, uri)
    profile = emulator.profile
    emulator.profile = replace(profile, arm_events="none")
    try:
        before = len(emulator.requests)
        accepted = sweeper.clock()
        sweeper.submit(submission.to_json().encode(), f"bench-{submission.id}")
        submitted = emulator.requests[before:]
        checks: list[dict[str, Any]] = []
        probed = False
        while True:
            record = sweeper.ledger.get_job(submission.id)
            assert record is not None
            if record.state.finished:
                break
            if len(checks) > 8:
                raise RuntimeError(f"{submission.id} not concluded after {len(checks)} sweeps")
            if record.step == DEPLOYMENT and not probed:
                probed = True  # check at once, while the deployment's write still runs
            else:
                _wait_for_write(stack, endpoint, record.step)
            checks.append(_check(stack, sweeper, record, ahead, accepted))
    finally:
        emulator.profile = profile
    posted = _asset_event_time(stack, uri, submission.id)
    last = checks[-1]
    return {
        "endpoint": endpoint,
        "via": record.via,
        "submit_calls": len(submitted),
        "submit_requests": _kinds(submitted),
        "checks": checks,
        "last_check_to_asset_event_s": round(posted - last["started"], 3),
    }


def _check(
    stack: Stack, sweeper: Bridge, record: JobRecord, ahead: list[float], accepted: float
) -> dict[str, Any]:
    """Move the sweeper's clock to when the deployment is due, and sweep once."""
    watch = sweeper.ledger.watching(record.name)
    assert watch is not None
    ahead[0] = max(ahead[0], watch.due_at - time.time())
    requests = stack.emulator.requests
    before = len(requests)
    started = time.time()
    report = Reconciler(sweeper).sweep()
    seconds = time.time() - started
    after = sweeper.ledger.get_job(record.name)
    found = report.jobs.get(record.name, "not due")
    if after is not None and after.state.finished:
        found = "concluded"
    elif after is not None and after.step != record.step:
        found = "advanced"  # the next write is under way
    return {
        "check": f"{record.step} {found}",
        "at_s": round(watch.due_at - accepted, 1),
        "calls": len(requests) - before,
        "requests": _kinds(requests[before:]),
        "seconds": round(seconds, 3),
        "started": started,
    }


def _wait_for_write(stack: Stack, endpoint: str, step: str | None) -> None:
    online = stack.emulator.online
    timeout = 30 + 2 * online.online_seconds
    if step == DEPLOYMENT:
        online.wait_for(endpoint, DEPLOYMENT_NAME, TERMINAL, timeout=timeout)
    else:
        online.wait_for(endpoint, None, TERMINAL, timeout=timeout)


# -- what they share ----------------------------------------------------------------------------


def _operator_send_seconds(stack: Stack, rounds: int, model: str, uri: str) -> float:
    """`DeployAzureMLModelOperator`'s own work in the task: build the submission, check it as the
    bridge will (its round trip through the receiver's parser), send it (to a queue of the local
    Service Bus nobody reads, with the operator's sender)."""
    if not stack.servicebus.namespace.has_entity(OPERATOR_QUEUE):
        stack.servicebus.create_queue(OPERATOR_QUEUE)
    sender = ServiceBusSender(stack.servicebus.address, OPERATOR_QUEUE, development_emulator=True)
    samples = []
    try:
        for index in range(rounds + 1):
            started = time.perf_counter()
            sender.send(_deploy_submission(f"bench-op-{index}", model, uri))
            if index:  # the first send opens the connection and the link
                samples.append(time.perf_counter() - started)
    finally:
        sender.close()
    return statistics.median(samples)


def _deploy_submission(endpoint: str, model: str, uri: str) -> Submission:
    fields = {
        "origin": {"dag_id": "bench", "run_id": f"deploy-{time.time_ns()}", "task_id": "deploy"},
        "operation": {"kind": "deploy", "endpoint": endpoint, "deployment": DEPLOYMENT_NAME,
                      "model": model, "instance_type": INSTANCE_TYPE, "instance_count": 1},
        "on": {"completed": [uri], "failed": [uri]},
    }  # fmt: skip
    return Submission.parse(Submission.model_validate(fields).to_json())


def _registered_model(stack: Stack) -> str:
    name = f"bench-{secrets.token_hex(4)}"
    registration = RegisterModel(name=name, path="azureml://datastores/blob/paths/models/bench/")
    azureml_jobs(stack.settings).register_model(registration, "1", {})
    return f"{name}:1"


def _kinds(made: Sequence[Any]) -> dict[str, int]:
    """The requests by method and what they address: `GET endpoint`, `PUT deployment`, ..."""
    found: Counter[str] = Counter()
    for request in made:
        found[f"{request.method} {_addressed(request.path)}"] += 1
    return dict(sorted(found.items()))


def _addressed(path: str) -> str:
    if OPERATION_ROUTE.match(path):
        return "operation status"
    below = path.split("/workspaces/", 1)[-1].split("/")[1:]  # under the workspace's id
    if not below:
        return "workspace"
    if below[0].lower() == "onlineendpoints":
        return ("endpoints", "endpoint", "deployments", "deployment", "deployment logs")[
            min(len(below) - 1, 4)
        ]
    return below[0]


def _endpoint_name() -> str:
    return f"bench-{secrets.token_hex(4)}"


def _writes_seconds(stack: Stack) -> float:
    return 3 * stack.emulator.online.online_seconds


def _concluded(ledger: Ledger, name: str, timeout: float) -> JobRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = ledger.get_job(name)
        if record is not None and record.state.finished:
            return record
        time.sleep(0.05)
    raise TimeoutError(f"deployment {name} not concluded within {timeout:.0f}s")


def _asset_event_time(stack: Stack, uri: str, name: str) -> float:
    """When Airflow recorded the asset event the submission's outcome posted on `uri`."""
    from airflow_client.client import AssetApi

    assert stack.airflow is not None
    rest = stack.airflow.rest()
    api = AssetApi(rest.api_client)
    asset_id = rest.asset_id(uri)
    offset = 0
    while True:
        page = api.get_asset_events(asset_id=asset_id, limit=100, offset=offset).asset_events
        for event in page:
            if (event.extra or {}).get("job_name") == name:
                return float(event.timestamp.timestamp())
        if len(page) < 100:
            raise RuntimeError(f"no asset event on {uri} for {name}")
        offset += len(page)


# -- from measured costs to deployments of minutes -----------------------------------------------


def _measured(
    options: Options,
    send: float,
    provider: list[dict[str, Any]],
    events: list[dict[str, Any]],
    sweep: dict[str, Any],
) -> dict[str, Any]:
    writes = 3 * options.online_seconds
    polls = statistics.median(r["status_reads"] for r in provider)
    worker = statistics.median(r["worker_seconds"] for r in provider)
    return {
        "online_seconds": options.online_seconds,
        "operator_send_seconds_p50": round(send, 4),
        "provider_worker_seconds_p50": worker,
        "provider_calls_p50": statistics.median(r["calls"] for r in provider),
        "provider_status_reads_p50": polls,
        "provider_status_reads_model": 3 * status_reads(options.online_seconds, 1.0),
        # What the provider's calls cost beyond the writes themselves (Retry-After: 1 here).
        "provider_overhead_seconds": round(max(0.0, worker - writes), 3),
        "bridge_calls_p50": statistics.median(r["calls"] for r in events),
        "bridge_last_write_to_asset_event_s_p50": statistics.median(
            r["last_write_to_asset_event_s"] for r in events
        ),
        # The chain's own time: three writes, each advanced by its event.
        "bridge_hops_seconds": round(
            max(0.0, statistics.median(r["send_to_asset_event_s"] for r in events) - writes), 3
        ),
        "bridge_via": sorted({str(r["via"]) for r in events}),
        "sweep_submit_calls": sweep["submit_calls"],
        "sweep_submit_requests": sweep["submit_requests"],
        "sweep_check_calls": {c["check"]: c["calls"] for c in sweep["checks"]},
        "sweep_checks_at_s": [c["at_s"] for c in sweep["checks"]],
        "sweep_last_check_to_asset_event_s": sweep["last_check_to_asset_event_s"],
        "sweep_via": sweep["via"],
    }


def sweep_schedule(writes: Sequence[float]) -> list[tuple[float, str]]:
    """The checks the sweep makes of a deployment whose writes take `writes` seconds, the first
    started at acceptance (t = 0) and each next one by the check that finds the last ended:
    (when, "<step> <what it found>"). The step names are bridge.runner's. Each write is first due
    `Bridge.retry_base` after it began, then backs off to OPERATION_MAX_BACKOFF_SECONDS; the
    timer's runs decide when a due check is made."""
    steps = (ENDPOINT, DEPLOYMENT, TRAFFIC)
    step, ends = 0, writes[0]
    due, count, checks = RETRY_BASE_SECONDS, 0, []  # the submission began the first write
    while True:
        at = _timer_run(due)
        if at < ends:
            checks.append((at, f"{steps[step]} running"))
            due, count = _next_due(at, count), count + 1
        elif step == len(writes) - 1:
            checks.append((at, f"{steps[step]} concluded"))
            return checks
        else:
            checks.append((at, f"{steps[step]} advanced"))
            step += 1
            ends = at + writes[step]
            due, count = at + RETRY_BASE_SECONDS, 0


def checks_before(writes: Sequence[float]) -> list[float]:
    """When the sweep reads an operation that ARM events carry along (each write's event, at its
    end, begins the next write and sets the next check): its reads while a write is in flight."""
    found: list[float] = []
    start = 0.0
    for seconds in writes:
        end = start + seconds
        due, count = start + RETRY_BASE_SECONDS, 0
        while (at := _timer_run(due)) < end:
            found.append(at)
            due, count = _next_due(at, count), count + 1
        start = end
    return found


def _next_due(at: float, count: int) -> float:
    return float(at + min(RETRY_BASE_SECONDS * 2**count, OPERATION_MAX_BACKOFF_SECONDS))


def _timer_run(due: float) -> float:
    """The first run of the reconcile timer at or after `due`."""
    return (
        TIMER_PHASE_SECONDS + math.ceil((due - TIMER_PHASE_SECONDS) / TIMER_SECONDS) * TIMER_SECONDS
    )


def _rows(m: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    poll = deployment_poll_seconds()
    check_calls: dict[str, int] = m["sweep_check_calls"]
    running = check_calls.get("deployment running", 0)
    fixed = m["provider_calls_p50"] - m["provider_status_reads_p50"]
    for label, seconds in DURATIONS.items():
        writes = (OTHER_WRITE_SECONDS, seconds, OTHER_WRITE_SECONDS)
        total = sum(writes)
        # The provider: each write is seen on average half a poll interval after it ends.
        lags = (ENDPOINT_POLL_SECONDS / 2, poll / 2, ENDPOINT_POLL_SECONDS / 2)
        provider_done = total + sum(lags) + m["provider_overhead_seconds"]
        reads = (status_reads(writes[0], ENDPOINT_POLL_SECONDS) + status_reads(seconds, poll)
                 + status_reads(writes[2], ENDPOINT_POLL_SECONDS))  # fmt: skip
        events_done = total + m["bridge_hops_seconds"]
        sweeps = checks_before(writes)
        schedule = sweep_schedule(writes)
        swept = m["sweep_submit_calls"] + sum(
            check_calls.get(found, running) for _, found in schedule
        )
        last_write_end = _last_write_end_on(schedule, writes)
        swept_done = schedule[-1][0] + m["sweep_last_check_to_asset_event_s"]
        peers = {
            "provider": (provider_done, fixed + reads, lags[2]),
            "events": (
                m["operator_send_seconds_p50"],
                m["bridge_calls_p50"] + running * len(sweeps),
                m["bridge_last_write_to_asset_event_s_p50"],
            ),
            "sweep": (m["operator_send_seconds_p50"], swept, swept_done - last_write_end),
        }
        done = {"provider": provider_done, "events": events_done, "sweep": swept_done}
        for peer, (worker, calls, late) in peers.items():
            rows.append({
                "deployment": label,
                "peer": peer,
                "worker_seconds": round(worker, 3),
                "azureml_calls": int(calls),
                "airflow_knows_after_min": round(done[peer] / 60, 1),
                "after_last_write_s": round(late, 2),
                "sweep_checks": len(schedule) if peer == "sweep"
                else len(sweeps) if peer == "events" else 0,
            })  # fmt: skip
    return rows


def _last_write_end_on(schedule: list[tuple[float, str]], writes: Sequence[float]) -> float:
    """When the last write ended on this schedule: the check that started it, plus its length."""
    started = [at for at, found in schedule if found == f"{DEPLOYMENT} advanced"]
    return (started[-1] if started else 0.0) + writes[-1]


def print_tables(result: dict[str, Any]) -> None:
    m = result["measurements"]
    worker, calls = m["provider_worker_seconds_p50"], m["provider_calls_p50"]
    swept = m["sweep_submit_calls"] + sum(m["sweep_check_calls"].values())
    send = m["operator_send_seconds_p50"]
    measured_rows = [
        [PEERS["provider"], f"{worker:.3f}", "1", calls, 1.0,
         f"{m['provider_status_reads_p50']:.0f} status reads", "-"],
        [PEERS["events"], f"{send:.3f}", f"{send / worker:.4f}", m["bridge_calls_p50"],
         round(m["bridge_calls_p50"] / calls, 2), ", ".join(m["bridge_via"]),
         m["bridge_last_write_to_asset_event_s_p50"]],
        [PEERS["sweep"], f"{send:.3f}", f"{send / worker:.4f}", swept, round(swept / calls, 2),
         f"{len(m['sweep_check_calls'])} checks at "
         f"{', '.join(f'{at:.0f}' for at in m['sweep_checks_at_s'])} s",
         m["sweep_last_check_to_asset_event_s"]],
    ]  # fmt: skip
    print(table(
        f"10. Deploying a model, measured (3 writes of {m['online_seconds']:g} s each, "
        "Retry-After 1 s)",
        ["peer", "worker s", "x provider", "Azure ML calls", "x provider", "how",
         "end → asset event s"],
        measured_rows,
    ))  # fmt: skip
    baseline = {r["deployment"]: r for r in result["rows"] if r["peer"] == "provider"}
    rows = []
    for r in result["rows"]:
        provider = baseline[r["deployment"]]
        ratio = round(r["azureml_calls"] / provider["azureml_calls"], 2)
        rows.append([r["deployment"], PEERS[r["peer"]], f"{r['worker_seconds']:.3f}",
                     r["azureml_calls"], ratio, r["airflow_knows_after_min"],
                     r["after_last_write_s"], r["sweep_checks"]])  # fmt: skip
    print(table(
        "11. Deploying a model of 5, 10 and 20 minutes (computed from 10; endpoint and traffic "
        "writes 1 minute each)",
        ["deployment", "peer", "worker s", "Azure ML calls", "x provider", "Airflow knows, min",
         "after the last write, s", "sweep checks"],
        rows,
    ))  # fmt: skip
