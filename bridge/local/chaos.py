"""The chaos run: several bridge processes, one ledger, one Airflow on PostgreSQL, and a storm of
Event Grid deliveries with faults, counting every effect that should exist in Airflow.

Each bridge process is `bridge serve` (its own OS process and dev host). The jobs exist only as
ledger records (the storm is about the event path); each routes its completion to one of a few
assets that no DAG consumes, so Airflow's listing stays readable (apache/airflow#71360). Deliveries
are Azure ML events as Azure sends them (both completion types, `runTags` or `RunTags`, status in
any casing, duplicates with new event ids, batches of 1 to 10, shuffled), spread over the
processes, and retried like Event Grid until answered 200. Scenarios add faults:

- `storm`: none beyond the above;
- `lost-replies`: a proxy in front of Airflow loses a share of replies after Airflow acted, or
  answers 502 for them;
- `crash`: one process kills itself right after Airflow acted and before the ledger settled (an
  injected hook), and is started again; its claims are taken over after their lease;
- `outage`: Airflow's API server is stopped mid-burst for `outage_seconds`, then started again;
- `storage-blip`: Azurite (the ledger) is restarted mid-burst, its data kept;
- `out-of-order`: once every completion is in, a late `Running` and a `Failed` for every job;
- `misconfigured`: mid-burst, process 0 is restarted with a wrong Airflow password for
  `misconfigured_seconds`, then restarted with the right one (an operator fixes the secret). Its
  effects are refused (401 at `POST /auth/token`): blocked, answered 200 `blocked`, the jobs left
  open with their outcome noted; the processes' reconcile sweeps (on here, every
  `sweep_seconds`, first blocked retry `retry_seconds` after the block) route them again.

The report: effects expected, duplicated and missing, deliveries and their retries, and the time
to drain (until every effect is in Airflow; `misconfigured` then also waits until every job is
concluded in the ledger, and counts any that is not). `make chaos` runs every scenario at full
size; the tests run them scaled down.
"""

from __future__ import annotations

import json
import random
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bridge import signing
from bridge.adapters.airflow import AirflowRest
from bridge.contracts import TAG_SIGNATURE, TAG_SUBMISSION, Submission
from bridge.events import RUN_COMPLETED, RUN_STATUS_CHANGED
from bridge.ledger import JobRecord, JobState
from bridge.ledger.table import TableLedger
from bridge.local.airflow import BRIDGE_USER, LocalAirflow, fresh_postgres_database
from bridge.local.azurite import Azurite
from bridge.local.faults import Fault, FaultProxy
from bridge.local.process import (
    Service,
    child_environment,
    free_port,
    loopback_http,
    port_ready,
)
from bridge.local.serve import EVENT_KEY
from bridge.local.servicebus import LocalServiceBus
from bridge.settings import AIRFLOW_PASSWORD, SERVICEBUS_CONNECTION, SUBMISSION_QUEUE, Settings

SCENARIOS = (
    "storm", "lost-replies", "crash", "outage", "storage-blip", "out-of-order", "misconfigured",
)  # fmt: skip
ASSET = "azureml://bridge-chaos/asset-{index}"
FAILED_ASSET = "azureml://bridge-chaos/failed"
TOPIC = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/chaos/providers/"
    "Microsoft.MachineLearningServices/workspaces/chaos"
)
_DAG = '''"""Declares the chaos run's assets; never runs, and no DAG consumes them."""
from airflow.sdk import Asset, dag, task

ASSETS = [Asset(uri) for uri in {uris!r}]


@dag(schedule=None)
def chaos_assets():
    @task(outlets=ASSETS)
    def declare():
        pass

    declare()


chaos_assets()
'''


@dataclass(frozen=True)
class ChaosOptions:
    jobs: int = 1000
    deliveries: int = 10_000
    processes: int = 2
    assets: int = 8
    concurrency: int = 8
    fault_share: float = 0.2  # lost-replies: share of asset-event replies lost or turned 502
    crash_share: float = 0.02  # crash: chance of dying after each effect
    lease_seconds: float = 5.0
    outage_seconds: float = 30.0
    fault_after: float = 2.0  # seconds into the burst when an outage, a blip or a bad secret starts
    misconfigured_seconds: float = 30.0  # misconfigured: how long process 0's password is wrong
    # misconfigured: when it goes wrong. The scaled-down burst can be over within a second, so
    # there it goes wrong at once (deliveries to the restarting process wait for it).
    misconfigured_after: float = 2.0
    sweep_seconds: int = 5  # misconfigured: every process's reconcile sweep runs this often
    retry_seconds: float = 10.0  # misconfigured: reconcile_after, so first blocked retry (<= 60 s)
    seed: int = 20261126
    drain_timeout: float = 600.0


# The scaled-down run that `make test` makes (hundreds of deliveries): each fault still happens.
QUICK = ChaosOptions(
    jobs=60,
    deliveries=300,
    processes=2,
    assets=3,
    concurrency=4,
    crash_share=0.25,
    lease_seconds=3.0,
    outage_seconds=6.0,
    fault_after=1.0,
    misconfigured_seconds=6.0,
    misconfigured_after=0.0,
    sweep_seconds=2,
    retry_seconds=3.0,
    drain_timeout=240.0,
)


@dataclass
class ChaosReport:
    scenario: str
    processes: int
    jobs: int
    deliveries: int
    expected: int
    performed: int
    duplicated: int
    missing: int
    wrong_route: int
    retries: int
    drain_seconds: float
    faults: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"{self.scenario:<13} {self.processes} processes  {self.jobs:>5} jobs  "
            f"{self.deliveries:>6} deliveries  expected {self.expected:>5}  "
            f"duplicated {self.duplicated}  missing {self.missing}  wrong route "
            f"{self.wrong_route}  retries {self.retries:>5}  drained in {self.drain_seconds:6.1f}s"
            + (f"  faults {self.faults}" if self.faults else "")
        )


@dataclass
class _Stack:
    azurite: Azurite
    servicebus: LocalServiceBus
    airflow: LocalAirflow
    settings: Settings
    event_key: str
    workdir: Path


@contextmanager
def chaos_stack(workdir: Path, assets: int) -> Iterator[_Stack]:
    """Azurite, the local Service Bus and Airflow (PostgreSQL) once, for every scenario of a run.
    The storm is about the event path: each process's trigger listens on a queue of its own, on
    which nothing is sent."""
    dags = workdir / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    uris = [ASSET.format(index=i) for i in range(assets)] + [FAILED_ASSET]
    (dags / "chaos_assets.py").write_text(_DAG.format(uris=uris))
    with ExitStack() as stack:
        azurite = stack.enter_context(Azurite(workdir, persistent=True))
        servicebus = stack.enter_context(LocalServiceBus())
        airflow = stack.enter_context(
            LocalAirflow(
                workdir / "airflow", dags, database_url=fresh_postgres_database("bridge_chaos")
            )
        )
        airflow.wait_for_dags(["chaos_assets"], timeout=90)
        rest = AirflowRest(airflow.base_url, airflow.username, airflow.password)
        for uri in uris:  # Airflow knows an asset once the DAG is parsed: wait for every one
            _until(lambda uri=uri: _known(rest, uri), 60, f"asset {uri} known to Airflow")
        settings = Settings(
            azureml_subscription_id="00000000-0000-0000-0000-000000000000",
            azureml_resource_group="chaos",
            azureml_workspace="chaos",
            azureml_endpoint=f"http://127.0.0.1:{free_port()}/",  # never called: see below
            ledger_connection_string=azurite.connection_string,
            airflow_url=airflow.base_url,
            airflow_username=BRIDGE_USER,
            airflow_password=airflow.bridge_password,
            signing_key=secrets.token_hex(32),
            reconcile_schedule="0 0 0 1 1 *",  # the sweep stays out of the event path's way
            reconcile_after_seconds=36_000.0,
        )
        yield _Stack(azurite, servicebus, airflow, settings, secrets.token_urlsafe(12), workdir)


def run_scenario(stack: _Stack, scenario: str, options: ChaosOptions) -> ChaosReport:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: one of {', '.join(SCENARIOS)}")
    table = f"chaos{scenario.replace('-', '')}{secrets.token_hex(3)}"
    overrides: dict[str, Any] = {"ledger_table": table}
    if scenario == "misconfigured":
        # The sweep is what routes a blocked job again: here it runs every few seconds, and the
        # first retry of a blocked job comes `retry_seconds` after the block (the bridge's retry
        # base is min(reconcile_after, 60 s)), doubling per attempt.
        overrides["reconcile_schedule"] = f"*/{options.sweep_seconds} * * * * *"
        overrides["reconcile_after_seconds"] = options.retry_seconds
    settings = Settings(**{**asdict(stack.settings), **overrides})
    rng = random.Random(options.seed)
    jobs = _seed_jobs(settings, options, table)
    storm = _storm(jobs, settings.signing_key, options, rng)
    with ExitStack() as running:
        proxies: list[FaultProxy] = []
        if scenario == "lost-replies":
            for _ in range(options.processes):
                proxy = running.enter_context(
                    FaultProxy(stack.airflow.base_url, _lossy(options, rng.randrange(2**31)))
                )
                proxies.append(proxy)
        hosts = [
            BridgeProcess(
                settings,
                index,
                servicebus=stack.servicebus,
                event_key=stack.event_key,
                logs=stack.workdir / "logs",
                airflow_url=proxies[index].url if proxies else None,
                lease_seconds=options.lease_seconds,
                crash_share=options.crash_share if scenario == "crash" and index == 0 else 0.0,
            )
            for index in range(options.processes)
        ]
        for host in hosts:
            running.enter_context(host)
        started = time.monotonic()
        driver = _Driver(hosts, stack.event_key, options)
        fault = _Fault(stack, hosts, scenario, options)
        fault.start()
        driver.deliver(storm)
        fault.join()
        if scenario == "out-of-order":
            driver.deliver(_late(jobs, settings.signing_key, rng))
        drained = _drain(stack, jobs, started, options.drain_timeout)
        faults = Counter(p.fault.value for proxy in proxies for p in proxy.faults() if p.fault)
        faults["restarts"] = sum(host.restarts for host in hosts)
        faults[scenario] = fault.happened
        faults["blocked"] = driver.blocked  # events answered 200 "blocked"
        if scenario == "misconfigured":  # and every blocked job healed: none is left open
            faults["unconcluded"] = _unconcluded(settings, jobs, started, options.drain_timeout)
        counts = _counts(stack, jobs)
    expected = len(jobs)
    performed = sum(1 for job in jobs if counts["done"].get(job.id, 0) >= 1)
    return ChaosReport(
        scenario=scenario,
        processes=options.processes,
        jobs=len(jobs),
        deliveries=len(storm),
        expected=expected,
        performed=performed,
        duplicated=sum(n - 1 for n in counts["done"].values() if n > 1),
        missing=expected - performed,
        wrong_route=sum(counts["failed"].values()),
        retries=driver.retries,
        drain_seconds=round(drained, 1),
        faults={k: v for k, v in faults.items() if v},
    )


# -- the jobs and their events -------------------------------------------------------------------


def _seed_jobs(settings: Settings, options: ChaosOptions, table: str) -> list[Submission]:
    assert settings.ledger_connection_string is not None
    ledger = TableLedger.from_connection_string(settings.ledger_connection_string, table)
    jobs = []
    for index in range(options.jobs):
        job = Submission.model_validate(
            {
                "origin": {"dag_id": "chaos", "run_id": f"{table}-{index}", "task_id": "submit"},
                "job": {"command": "true", "environment": "azureml:e:1", "compute": "c"},
                "on": {"completed": [ASSET.format(index=index % options.assets)],
                       "failed": [FAILED_ASSET]},
            }
        )  # fmt: skip
        ledger.add_job(JobRecord(job, JobState.CREATED))
        jobs.append(job)
    ledger.close()
    return jobs


def _event(job: Submission, key: str, event_type: str, status: str | None,
           rng: random.Random) -> dict[str, Any]:  # fmt: skip
    tags = {TAG_SUBMISSION: job.id, TAG_SIGNATURE: signing.sign(key, job.id)}
    data: dict[str, Any] = {"experimentId": "e", "experimentName": "chaos", "runId": job.id}
    data["RunTags" if rng.random() < 0.5 else "runTags"] = tags
    if status is not None:
        data["runStatus"] = status
    return {
        "id": secrets.token_hex(12), "topic": TOPIC, "subject": f"experiments/e/runs/{job.id}",
        "eventType": event_type, "eventTime": "2026-11-26T10:00:00.0000000Z", "data": data,
        "dataVersion": "2", "metadataVersion": "1",
    }  # fmt: skip


def _storm(
    jobs: list[Submission], key: str, options: ChaosOptions, rng: random.Random
) -> list[dict[str, Any]]:
    """At least one completion per job, then duplicates and progress events up to the count."""
    casings = ("Completed", "completed", "COMPLETED")
    events = [
        _event(job, key, RUN_COMPLETED, None, rng)
        if rng.random() < 0.5
        else _event(job, key, RUN_STATUS_CHANGED, rng.choice(casings), rng)
        for job in jobs
    ]
    while len(events) < options.deliveries:
        job = rng.choice(jobs)
        roll = rng.random()
        if roll < 0.3:
            events.append(_event(job, key, RUN_COMPLETED, None, rng))
        elif roll < 0.7:
            events.append(_event(job, key, RUN_STATUS_CHANGED, rng.choice(casings), rng))
        else:
            progress = rng.choice(("Running", "running", "Queued"))
            events.append(_event(job, key, RUN_STATUS_CHANGED, progress, rng))
    rng.shuffle(events)
    return events


def _late(jobs: list[Submission], key: str, rng: random.Random) -> list[dict[str, Any]]:
    late = [_event(job, key, RUN_STATUS_CHANGED, status, rng)
            for job in jobs for status in ("Running", "Failed")]  # fmt: skip
    rng.shuffle(late)
    return late


def _lossy(options: ChaosOptions, seed: int) -> Any:
    rng = random.Random(seed)
    lock = threading.Lock()

    def decide(method: str, path: str, body: bytes) -> Fault | None:
        if method != "POST" or not path.startswith("/api/v2/assets/events"):
            return None
        with lock:
            roll = rng.random()
        if roll < options.fault_share / 2:
            return Fault.LOSE_REPLY
        if roll < options.fault_share:
            return Fault.GATEWAY_ERROR
        return None

    return decide


class _Fault(threading.Thread):
    """An outage, a storage blip or a wrong secret, `fault_after` seconds into the burst."""

    def __init__(
        self, stack: _Stack, hosts: list[BridgeProcess], scenario: str, options: ChaosOptions
    ) -> None:
        super().__init__(name=f"chaos-{scenario}", daemon=True)
        self.stack = stack
        self.hosts = hosts
        self.scenario = scenario
        self.options = options
        self.happened = 0

    def run(self) -> None:
        if self.scenario not in ("outage", "storage-blip", "misconfigured"):
            return
        misconfigured = self.scenario == "misconfigured"
        time.sleep(self.options.misconfigured_after if misconfigured else self.options.fault_after)
        if self.scenario == "outage":
            self.stack.airflow.stop_api()
            time.sleep(self.options.outage_seconds)
            self.stack.airflow.start_api()
        elif self.scenario == "misconfigured":
            # A wrong secret deployed to one instance; then the operator fixes it and restarts.
            wrong = f"wrong-{secrets.token_urlsafe(8)}"
            self.hosts[0].restart({AIRFLOW_PASSWORD: wrong})
            time.sleep(self.options.misconfigured_seconds)
            self.hosts[0].restart({})
        else:
            self.stack.azurite.stop()
            self.stack.azurite.start()
        self.happened = 1


# -- the bridge processes and the deliveries -------------------------------------------------------


class BridgeProcess:
    """`bridge serve` in its own process; started again if it dies (as Functions would)."""

    def __init__(
        self,
        settings: Settings,
        index: int,
        *,
        servicebus: LocalServiceBus,
        event_key: str,
        logs: Path,
        airflow_url: str | None = None,
        lease_seconds: float = 120.0,
        crash_share: float = 0.0,
    ) -> None:
        self.index = index
        self.logs = logs
        self.port = free_port()
        self.restarts = 0  # after it died
        self.starts = 0
        queue = f"serve{index}"
        if not servicebus.namespace.has_entity(queue):
            servicebus.create_queue(queue)
        env = child_environment(settings.environment(), {
            SERVICEBUS_CONNECTION: servicebus.connection_string, SUBMISSION_QUEUE: queue,
            EVENT_KEY: event_key})  # fmt: skip
        if airflow_url:
            env["BRIDGE_AIRFLOW_URL"] = airflow_url
        bridge = str(Path(sys.executable).with_name("bridge"))
        # A lost reply here was always committed before it was lost: the hold can be the lease.
        self.argv = [bridge, "serve", "--port", str(self.port), "--lease-seconds",
                     str(lease_seconds), "--ambiguity-hold", str(lease_seconds),
                     "--crash-after-effect", str(crash_share)]  # fmt: skip
        self.env = self.base_env = env
        self.service: Service | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/events"

    def __enter__(self) -> BridgeProcess:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.service is not None:
            self.service.stop(grace=5)

    def _start(self) -> None:
        log = self.logs / f"bridge-{self.index}-{self.starts}.log"
        self.starts += 1
        self.service = Service(
            f"bridge-{self.index}", self.argv, log=log, env=self.env,
            ready=port_ready(self.port),  # up, even while Airflow is not (health would say 503)
        ).start()  # fmt: skip
        self.service.wait_ready(60)

    def restart(self, settings: dict[str, str]) -> None:
        """Stopped and started again on its settings with `settings` over them, as an operator
        changes an app setting (a restart of the app). Deliveries meanwhile are retried."""
        with self._lock:
            if self.service is not None:
                self.service.stop(grace=5)
            self.env = {**self.base_env, **settings}
            self._start()

    def revive_if_dead(self) -> None:
        with self._lock:
            process = self.service.process if self.service else None
            if process is not None and process.poll() is not None:
                self.restarts += 1
                self._start()


class _Driver:
    """Delivers batches like Event Grid: each to one process, retried until answered 2xx."""

    def __init__(self, hosts: list[BridgeProcess], key: str, options: ChaosOptions) -> None:
        self.hosts = hosts
        self.key = key
        self.options = options
        self.retries = 0
        self.blocked = 0  # events answered 200 with result "blocked"
        self._lock = threading.Lock()
        self._rng = random.Random(options.seed + 1)

    def deliver(self, events: list[dict[str, Any]]) -> None:
        batches, index = [], 0
        while index < len(events):
            size = self._rng.randint(1, 10)
            batches.append(events[index : index + size])
            index += size
        with ThreadPoolExecutor(max_workers=self.options.concurrency) as pool:
            list(pool.map(self._deliver, enumerate(batches)))

    def _deliver(self, numbered: tuple[int, list[dict[str, Any]]]) -> None:
        number, batch = numbered
        host = self.hosts[number % len(self.hosts)]
        body = json.dumps(batch).encode()
        deadline = time.monotonic() + self.options.drain_timeout
        delay = 0.1
        while time.monotonic() < deadline:
            if self._post(host.url, body):
                return
            with self._lock:
                self.retries += 1
            host.revive_if_dead()
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise TimeoutError(f"batch {number} was never accepted by {host.url}")

    def _post(self, url: str, body: bytes) -> bool:
        headers = {"Content-Type": "application/json", "aeg-event-type": "Notification",
                   "aeg-sas-key": self.key}  # fmt: skip
        try:
            status, reply = loopback_http("POST", url, body, headers, timeout=60)
        except OSError:
            return False
        if not 200 <= status < 300:
            return False
        try:
            results = json.loads(reply).get("results") or []
        except (ValueError, AttributeError):
            results = []
        blocked = sum(1 for result in results if result.get("result") == "blocked")
        if blocked:
            with self._lock:
                self.blocked += blocked
        return True


# -- counting ------------------------------------------------------------------------------------


def _counts(stack: _Stack, jobs: list[Submission]) -> dict[str, Counter[str]]:
    """How many events Airflow holds per job on its completion asset, and on the failure one."""
    names = {job.id for job in jobs}
    rest = AirflowRest(stack.airflow.base_url, stack.airflow.username, stack.airflow.password)
    counts: dict[str, Counter[str]] = {"done": Counter(), "failed": Counter()}
    uris = {job.on.completed[0] for job in jobs}
    for kind, targets in (("done", uris), ("failed", {FAILED_ASSET})):
        for uri in targets:
            for extra in rest.events_on(uri):
                if extra.get("job_name") in names:
                    counts[kind][str(extra["job_name"])] += 1
    return counts


def _drain(stack: _Stack, jobs: list[Submission], started: float, timeout: float) -> float:
    """Seconds until every job's completion is in Airflow (all deliveries are answered by now)."""
    deadline = started + timeout
    while time.monotonic() < deadline:
        done = _counts(stack, jobs)["done"]
        if all(done.get(job.id, 0) >= 1 for job in jobs):
            break
        time.sleep(1)
    return time.monotonic() - started


def _unconcluded(settings: Settings, jobs: list[Submission], started: float, timeout: float) -> int:
    """How many jobs the ledger has not concluded (COMPLETED) once every effect is in Airflow,
    waiting for the last ones within the drain's time: a healed block leaves none open."""
    assert settings.ledger_connection_string is not None
    ledger = TableLedger.from_connection_string(
        settings.ledger_connection_string, settings.ledger_table
    )
    deadline = started + timeout
    open_ = [job.id for job in jobs]
    try:
        while True:
            open_ = [name for name in open_ if not _concluded(ledger.get_job(name))]
            if not open_ or time.monotonic() > deadline:
                return len(open_)
            time.sleep(1)
    finally:
        ledger.close()


def _concluded(record: JobRecord | None) -> bool:
    return record is not None and record.state is JobState.COMPLETED and not record.blocked


def _known(rest: AirflowRest, uri: str) -> bool:
    try:
        rest.asset_id(uri)
        return True
    except Exception:
        return False


def _until(probe: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s: {what}")
        time.sleep(0.5)
