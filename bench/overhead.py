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
    "update_job": "settle",
    "unwatch": "settle",
}
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
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self._clock.add(phase, time.perf_counter() - started)

        return timed


class _Phases(threading.local):
    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)

    def add(self, phase: str, seconds: float) -> None:
        self.current[phase] += seconds

    def take(self) -> dict[str, float]:
        taken, self.current = dict(self.current), defaultdict(float)
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
    bridge = build(settings)
    bridge.ledger = Timed(bridge.ledger, phases)
    bridge.airflow = Timed(bridge.airflow, phases)
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
    for index, job in enumerate(jobs):
        body = json.dumps([completion(job, settings.signing_key)]).encode()
        started = time.perf_counter()
        parse_events(body)
        parsed = time.perf_counter() - started
        phases.take()
        started = time.perf_counter()
        reply = answer("POST", HEADERS, body, lambda: bridge)
        total = time.perf_counter() - started
        if reply.status != 200 or reply.body is None:
            raise RuntimeError(f"the bridge answered {reply.status}: {reply.body}")
        result = reply.body["results"][0]["result"]
        if result != "handled":
            raise RuntimeError(f"event for {job.id} was {result}, not handled: {reply.body}")
        split = phases.take()
        timed_raw = raw(ids[targets[index]], {"bench": index})
        started = time.perf_counter()
        entity = azurite.get_entity(job.id, "job")
        read = time.perf_counter() - started
        started = time.perf_counter()
        azurite.update_entity(
            {"PartitionKey": job.id, "RowKey": "job", "bench": index}, mode=UpdateMode.MERGE
        )
        merge = time.perf_counter() - started
        del entity
        if index < warmup:
            continue
        samples["total"].append(total)
        samples["parse"].append(parsed)
        for phase in ("claim", "airflow", "settle"):
            samples[phase].append(split.get(phase, 0.0))
        samples["other"].append(total - parsed - sum(split.values()))
        samples["raw_post"].append(timed_raw)
        samples["azurite_read"].append(read)
        samples["azurite_merge"].append(merge)
    azurite.close()
    return _result(samples)


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
