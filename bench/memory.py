"""Memory: resident set size of one bridge process (`bridge serve`) after 1k and after 10k events.

Deliveries as Azure sends them for each job: its RunStatusChanged(Completed), the RunCompleted
that comes with it (a duplicate to the ledger), and a late Running (ignored); in batches of 10,
four at a time. Each job routes to one of the load assets. Growth between the two readings is
what a long-lived Function instance would accumulate: the goal is under 10 MB.
"""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.delivery import Deliverer
from bench.overhead import completion, seed
from bench.processes import rss_mib
from bench.report import table
from bridge.events import RUN_COMPLETED
from bridge.local.chaos import BridgeProcess
from bridge.local.stack import Stack
from bridge.settings import Settings

GOAL_MB = 10.0
BATCH = 10
EVENTS_PER_JOB = 3


def run(stack: Stack, checkpoints: tuple[int, int], uris: list[str]) -> dict[str, Any]:
    assert stack.airflow is not None
    table_name = f"memory{secrets.token_hex(3)}"
    settings = Settings(**{**asdict(stack.settings), "ledger_table": table_name})
    event_key = secrets.token_urlsafe(12)
    first, last = checkpoints
    jobs_needed = -(-last // EVENTS_PER_JOB)
    with ThreadPoolExecutor(4) as pool:  # seeding is not what is measured: spread it out
        chunks = [range(i, min(i + 250, jobs_needed)) for i in range(0, jobs_needed, 250)]
        seeded = pool.map(
            lambda chunk: seed(settings, table_name,
                               [uris[i % len(uris)] for i in chunk], f"m{chunk.start}"),
            chunks,
        )  # fmt: skip
        jobs = [job for part in seeded for job in part]
    events = [
        event
        for job in jobs
        for event in (
            completion(job, settings.signing_key),
            {**completion(job, settings.signing_key), "eventType": RUN_COMPLETED},
            completion(job, settings.signing_key, status="Running"),
        )
    ][:last]
    readings: dict[str, float] = {}
    logs = Path(stack.airflow.home).parent / "bench-logs"
    with BridgeProcess(
        settings, 1, servicebus=stack.servicebus,
        event_key=event_key, logs=logs,
    ) as host:  # fmt: skip
        assert host.service is not None and host.service.process is not None
        pid = host.service.process.pid
        readings["started"] = rss_mib(pid)
        started = time.monotonic()
        deliverer = Deliverer(host.url, event_key)
        _deliver(deliverer, events[:first])
        readings[f"after {first}"] = rss_mib(pid)
        _deliver(deliverer, events[first:])
        readings[f"after {last}"] = rss_mib(pid)
        seconds = time.monotonic() - started
    growth = readings[f"after {last}"] - readings[f"after {first}"]
    return {
        "events": last,
        "rss_mib": {k: round(v, 1) for k, v in readings.items()},
        "growth_mib": round(growth, 1),
        "events_per_s": round(last / seconds, 1),
        "retried": dict(deliverer.retries),
        "goals": {"growth_mib": GOAL_MB},
    }


def _deliver(deliverer: Deliverer, events: list[dict[str, Any]]) -> None:
    batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(deliverer.deliver, batches))


def print_table(result: dict[str, Any]) -> None:
    rows = [[reading, mib] for reading, mib in result["rss_mib"].items()]
    rows.append(["growth between the last two", result["growth_mib"]])
    title = (
        f"7. Memory of one bridge process, RSS in MiB ({result['events_per_s']} events/s); "
        f"goal: growth < {GOAL_MB:.0f} MB"
    )
    print(table(title, ["reading", "MiB"], rows))
