"""Bridge overhead: one run event received → its asset event returned by Airflow, split by phase.

The bridge is the production object graph (`bridge.composition.build`) called in-process through
the webhook's own entry point (`bridge.webhook.answer`), with a fresh ledger table on Azurite and
the real Airflow on PostgreSQL. Each job routes its completion to an asset of its own (the worst
case for the asset-id cache). Phases are timed by a delegate around the ledger and the Airflow
adapter (the real ones do the work): parse is the body to events, claim is reading the job and
claiming the effect, Airflow is the POST (and any asset-id lookup), settle is every ledger write
after it. The baseline, interleaved one for one in the same run: the same POST /assets/events with
the same client library and a known asset id (Airflow's own latency), and Azurite's own latency
for one entity read and one merge.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from azure.data.tables import TableClient, UpdateMode

from bench.report import percentile, summary_ms, table
from bench.stack import asset_ids
from bridge import signing
from bridge.composition import build
from bridge.contracts import TAG_SIGNATURE, TAG_SUBMISSION, Submission
from bridge.events import RUN_STATUS_CHANGED, parse_events
from bridge.ledger import JobRecord, JobState
from bridge.local.stack import Stack
from bridge.settings import Settings
from bridge.webhook import answer

PHASES = {
    "get_job": "claim",
    "claim": "claim",
    "post_asset_event": "airflow",
    "complete": "settle",
    "update_job": "settle",  # the conclusion: effects settled and the trail kept with it
    "unwatch": "settle",
    "add_trail": "settle",
}
LEDGER_CALLS = {name for name, phase in PHASES.items() if phase != "airflow"}
GOAL_CPU_MS = 5.0
HEADERS = {"Content-Type": "application/json", "aeg-event-type": "Notification"}
TOPIC = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/bench/providers/"
    "Microsoft.MachineLearningServices/workspaces/bench"
)


class Timed:
    """Delegates every call to `inner`, adding its duration to the current event's phases."""

    def __init__(self, inner: Any, clock: _Phases) -> None:
        self._inner = inner
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        phase = PHASES.get(name)
        if phase is None or not callable(attribute):
            return attribute

        def timed(*args: Any, **kwargs: Any) -> Any:
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return attribute(*args, **kwargs)
            finally:
                self._clock.add(phase, time.perf_counter() - started, time.thread_time() - cpu)
                if name in LEDGER_CALLS:
                    self._clock.calls += 1

        return timed


class _Phases(threading.local):
    """Wall and CPU seconds per phase of the current event, and its ledger round trips."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls = 0

    def add(self, phase: str, seconds: float, cpu: float) -> None:
        self.current[phase] += seconds
        self.cpu[phase] += cpu

    def take(self) -> tuple[dict[str, float], dict[str, float], int]:
        taken = dict(self.current), dict(self.cpu), self.calls
        self.current, self.cpu, self.calls = defaultdict(float), defaultdict(float), 0
        return taken


def submission(index: int, uri: str, run: str) -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": "bench", "run_id": f"{run}-{index}", "task_id": "submit"},
            "job": {"command": "true", "environment": "azureml:e:1", "compute": "c"},
            "on": {"completed": [uri]},
        }
    )


def completion(job: Submission, key: str, status: str = "Completed") -> dict[str, Any]:
    """A signed RunStatusChanged as Azure ML sends it (see tests/fixtures/events)."""
    tags = {TAG_SUBMISSION: job.id, TAG_SIGNATURE: signing.sign(key, job.id)}
    return {
        "id": secrets.token_hex(12),
        "topic": TOPIC,
        "subject": f"experiments/e/runs/{job.id}",
        "eventType": RUN_STATUS_CHANGED,
        "eventTime": "2026-11-26T10:00:00.0000000Z",
        "data": {"experimentId": "e", "experimentName": "bench", "runId": job.id,
                 "runTags": tags, "runStatus": status},
        "dataVersion": "2",
        "metadataVersion": "1",
    }  # fmt: skip


def seed(settings: Settings, table_name: str, uris: list[str], run: str) -> list[Submission]:
    """Jobs as the ledger holds them once created: the event path is what is measured."""
    from bridge.ledger.table import TableLedger

    assert settings.ledger_connection_string is not None
    ledger = TableLedger.from_connection_string(settings.ledger_connection_string, table_name)
    jobs = [submission(index, uri, run) for index, uri in enumerate(uris)]
    for job in jobs:
        ledger.add_job(JobRecord(job, JobState.CREATED))
        ledger.watch(job.id, time.time() + 600)
    ledger.close()
    return jobs


def run(stack: Stack, events: int, uris: list[str]) -> dict[str, Any]:
    assert stack.airflow is not None
    table_name = f"overhead{secrets.token_hex(3)}"
    settings = Settings(**{**asdict(stack.settings), "ledger_table": table_name})
    phases = _Phases()
    bridge = _timed_bridge(settings, phases)
    warmup = 20
    targets = [uris[i % len(uris)] for i in range(events + warmup)]
    jobs = seed(settings, table_name, targets, table_name)
    # The baseline's client: the same library, token and asset ids resolved before timing.
    rest = stack.airflow.rest()
    ids = asset_ids(rest, sorted(set(targets)))
    raw = _raw_post(rest)
    azurite = TableClient.from_connection_string(
        stack.azurite.connection_string, table_name=table_name
    )
    samples: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    calls: list[int] = []
    for index, job in enumerate(jobs):
        body = json.dumps([completion(job, settings.signing_key)]).encode()
        started = time.perf_counter()
        parse_events(body)
        parsed = time.perf_counter() - started
        total, cpu_total, split, split_cpu, round_trips = _through(bridge, phases, body, job.id)
        baselines = _baselines(azurite, raw, ids[targets[index]], job.id, index)
        if index < warmup:
            continue
        samples["total"].append(total)
        samples["parse"].append(parsed)
        for phase in ("claim", "airflow", "settle"):
            samples[phase].append(split.get(phase, 0.0))
            cpu[phase].append(split_cpu.get(phase, 0.0))
        samples["other"].append(total - parsed - sum(split.values()))
        cpu["total"].append(cpu_total)
        cpu["other"].append(cpu_total - sum(split_cpu.values()))
        calls.append(round_trips)
        for name, seconds in baselines.items():
            samples[name].append(seconds)
    azurite.close()
    result = _result(samples)
    # CPU of the bridge's own thread per event (the SDKs' request handling included; Airflow's
    # and Azurite's are theirs), by phase, and the ledger round trips each event cost.
    result["cpu_ms"] = {
        phase: round(1000 * sum(values) / len(values), 2) for phase, values in cpu.items()
    }
    result["ledger_round_trips"] = round(sum(calls) / len(calls), 2)
    result["goals"]["cpu_ms_per_effect"] = GOAL_CPU_MS
    return result


def _timed_bridge(settings: Settings, phases: _Phases) -> Any:
    """The production bridge, its ledger and Airflow adapter timed by `phases`."""
    bridge = build(settings)
    bridge.ledger = Timed(bridge.ledger, phases)
    bridge.once.ledger = bridge.ledger  # the effect-once protocol's claims and settles too
    bridge.airflow = Timed(bridge.airflow, phases)
    bridge.once.airflow = bridge.airflow
    bridge.audit.keep = bridge.ledger.add_trail  # a span's records kept with a write of their own
    return bridge


def _through(
    bridge: Any, phases: _Phases, body: bytes, job: str
) -> tuple[float, float, dict[str, float], dict[str, float], int]:
    """One delivery through the webhook: wall and CPU seconds, both by phase, round trips."""
    phases.take()
    started, cpu_started = time.perf_counter(), time.thread_time()
    reply = answer("POST", HEADERS, body, lambda: bridge)
    total = time.perf_counter() - started
    cpu_total = time.thread_time() - cpu_started
    if reply.status != 200 or reply.body is None:
        raise RuntimeError(f"the bridge answered {reply.status}: {reply.body}")
    result = reply.body["results"][0]["result"]
    if result != "handled":
        raise RuntimeError(f"event for {job} was {result}, not handled: {reply.body}")
    split, split_cpu, round_trips = phases.take()
    return total, cpu_total, split, split_cpu, round_trips


def _baselines(
    azurite: TableClient, raw: Callable[[int, dict[str, Any]], float], asset: int, job: str,
    index: int,
) -> dict[str, float]:  # fmt: skip
    """Interleaved one for one with the bridge: Airflow's own POST, Azurite's read and merge."""
    timed_raw = raw(asset, {"bench": index})
    started = time.perf_counter()
    azurite.get_entity(job, "job")
    read = time.perf_counter() - started
    started = time.perf_counter()
    azurite.update_entity({"PartitionKey": job, "RowKey": "job", "bench": index},
                          mode=UpdateMode.MERGE)  # fmt: skip
    merge = time.perf_counter() - started
    return {"raw_post": timed_raw, "azurite_read": read, "azurite_merge": merge}


def _raw_post(rest: Any) -> Callable[[int, dict[str, Any]], float]:
    from airflow_client.client import AssetApi, CreateAssetEventsBody

    api = AssetApi(rest.api_client)

    def post(asset_id: int, extra: dict[str, Any]) -> float:
        body = CreateAssetEventsBody(asset_id=asset_id, extra=extra)
        started = time.perf_counter()
        api.create_asset_event(body)
        return time.perf_counter() - started

    return post


def _result(samples: dict[str, list[float]]) -> dict[str, Any]:
    summaries = {name: summary_ms(values) for name, values in samples.items()}
    bridge_p50 = percentile(samples["total"], 50) * 1000
    raw_p50 = percentile(samples["raw_post"], 50) * 1000
    return {
        "events": len(samples["total"]),
        "phases": summaries,
        "added_over_airflow_p50_ms": round(bridge_p50 - raw_p50, 2),
        "ratio_p50": round(bridge_p50 / raw_p50, 2),
        "goals": {
            "added_over_airflow_p50_ms": 20.0,
            "bridge_p50_ms": 50.0,
            "bridge_p99_ms": 250.0,
        },
    }


def print_table(result: dict[str, Any]) -> None:
    rows = []
    labels = {
        "parse": "parse (body → events)",
        "claim": "ledger: read job + claim",
        "airflow": "Airflow POST (+ asset id)",
        "settle": "ledger: settle",
        "other": "other (routing, replies)",
        "total": "bridge, event → Airflow returned",
        "raw_post": "baseline: raw POST /assets/events",
        "azurite_read": "baseline: Azurite entity read",
        "azurite_merge": "baseline: Azurite entity merge",
    }
    for name, label in labels.items():
        s = result["phases"][name]
        rows.append([label, s["p50_ms"], s["p95_ms"], s["p99_ms"]])
    title = (
        f"2. Bridge overhead over {result['events']} events (ms); adds "
        f"{result['added_over_airflow_p50_ms']:.1f} ms to Airflow's p50 (goal ≤ 20), "
        f"{result['ratio_p50']:.2f}x"
    )
    print(table(title, ["phase", "p50", "p95", "p99"], rows))
    if "cpu_ms" in result:
        cpu = result["cpu_ms"]
        rows = [[phase, cpu[phase]] for phase in ("claim", "airflow", "settle", "other", "total")]
        title = (
            f"2b. Bridge CPU per effect, in-process (ms; goal ≤ {GOAL_CPU_MS}); "
            f"{result['ledger_round_trips']} ledger round trips per effect"
        )
        print(table(title, ["phase", "CPU ms (mean)"], rows))
