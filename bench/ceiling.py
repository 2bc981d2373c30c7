"""The bridge's own ceiling: effects per second per core, where the bridge itself saturates.

A stand-in for Airflow's asset-event endpoint answers every `POST /api/v2/assets/events` after a
fixed 13 ms (Airflow's own p50 here, table 2), so that Airflow is never what limits the rate. In
front of it, `bridge serve` processes (as Function instances) on their own ledger table in
Azurite take signed completion events from many senders at once. The rate is raised by raising
the senders; each step reads the bridge processes' CPU from /proc. Effects per second per core is
the rate divided by the cores the bridge processes used: what one core of a Function instance
turns out when the bridge is what it waits on.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, replace
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.delivery import Deliverer
from bench.overhead import completion, seed
from bench.processes import group_cpu_seconds
from bench.report import table
from bridge.local.chaos import BridgeProcess
from bridge.local.process import JsonHandler, LoopbackServer
from bridge.local.stack import Stack
from bridge.settings import Settings

AIRFLOW_SECONDS = 0.013  # Airflow's own p50 for POST /assets/events on this machine (table 2)
GOAL_PER_CORE = 200.0
SENDERS = (4, 16, 32)


class StandInAirflow:
    """Answers the two calls the bridge makes for an asset event, in Airflow's shapes: the asset
    listing (by URI pattern, for the id) and the event's creation (after `delay`)."""

    def __init__(self, uris: list[str], delay: float = AIRFLOW_SECONDS) -> None:
        self.delay = delay
        self.ids = {uri: index + 1 for index, uri in enumerate(uris)}
        self.events = 0
        self._numbers = count(1)
        self._lock = threading.Lock()
        self._server = LoopbackServer(("127.0.0.1", 0), self._handler())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StandInAirflow:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _assets(self, query: str) -> dict[str, Any]:
        pattern = (parse_qs(query).get("uri_pattern") or [""])[0].lower()
        now = datetime.now(UTC).isoformat()
        found = [
            {"id": asset_id, "uri": uri, "name": uri, "group": "asset", "extra": {},
             "created_at": now, "updated_at": now, "aliases": [], "consuming_tasks": [],
             "producing_tasks": [], "scheduled_dags": [], "watchers": []}
            for uri, asset_id in self.ids.items() if pattern in uri.lower()
        ]  # fmt: skip
        return {"assets": found, "total_entries": len(found)}

    def _event(self, body: dict[str, Any]) -> dict[str, Any]:
        time.sleep(self.delay)
        with self._lock:
            self.events += 1
            number = next(self._numbers)
        return {
            "id": number, "asset_id": body.get("asset_id"), "extra": body.get("extra") or {},
            "partition_key": body.get("partition_key"), "source_map_index": -1,
            "created_dagruns": [], "timestamp": datetime.now(UTC).isoformat(),
        }  # fmt: skip

    def _handler(self) -> type[JsonHandler]:
        airflow = self

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path.rstrip("/") == "/api/v2/assets":
                    self.send_json(200, airflow._assets(parts.query))
                else:
                    self.send_json(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if urlsplit(self.path).path == "/api/v2/assets/events":
                    self.send_json(200, airflow._event(body))
                else:
                    self.send_json(404, {"detail": "Not Found"})

        return Handler


def run(
    stack: Stack, effects: int, uris: list[str], processes: tuple[int, ...] = (1, 2)
) -> dict[str, Any]:
    """For each number of bridge processes, the rate at each number of senders."""
    rows = []
    for instances in processes:
        with _bridges(stack, uris, instances) as (bridges, settings, airflow):
            deliverers = [Deliverer(bridge.url, bridge.event_key) for bridge in bridges]
            warm = seed(settings, settings.ledger_table or "", uris * instances, "warm")
            _send(deliverers, warm, settings.signing_key, 4 * instances)
            for senders in SENDERS:
                targets = [uris[i % len(uris)] for i in range(effects)]
                jobs = seed(settings, settings.ledger_table or "", targets, f"s{senders}")
                pids = [bridge.pid for bridge in bridges]
                before = sum(group_cpu_seconds(pid) for pid in pids)
                started = time.perf_counter()
                _send(deliverers, jobs, settings.signing_key, senders)
                seconds = time.perf_counter() - started
                cores = (sum(group_cpu_seconds(pid) for pid in pids) - before) / seconds
                rate = effects / seconds
                rows.append({
                    "processes": instances, "senders": senders, "effects": effects,
                    "effects_per_s": round(rate, 1), "bridge_cores": round(cores, 2),
                    "per_core": round(rate / cores, 1) if cores else None,
                    "cpu_ms_per_effect": round(1000 * cores / rate, 2),
                })  # fmt: skip
            if airflow.events < effects * len(SENDERS):
                raise RuntimeError(f"the stand-in got {airflow.events} events, fewer than sent")
    best = max(rows, key=lambda row: row["effects_per_s"] or 0.0)
    return {
        "airflow_ms": round(AIRFLOW_SECONDS * 1000),
        "levels": rows,
        "best": best,
        "goals": {"per_core": GOAL_PER_CORE},
    }


class _Bridge:
    def __init__(self, process: BridgeProcess, event_key: str) -> None:
        self.process = process
        self.event_key = event_key

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def pid(self) -> int:
        service = self.process.service
        assert service is not None and service.process is not None
        return service.process.pid


@contextmanager
def _bridges(
    stack: Stack, uris: list[str], instances: int
) -> Iterator[tuple[list[_Bridge], Settings, StandInAirflow]]:
    assert stack.airflow is not None
    table_name = f"ceiling{secrets.token_hex(3)}"
    # A static token: the stand-in takes any (the bridge then makes no token request).
    own = Settings(**{**asdict(stack.settings), "ledger_table": table_name})
    settings = replace(own, airflow_token="stand-in", airflow_username="", airflow_password="")
    logs = Path(stack.airflow.home).parent / "bench-logs"
    with ExitStack() as context:
        airflow = context.enter_context(StandInAirflow(uris))
        bridges = []
        for index in range(instances):
            key = secrets.token_urlsafe(12)
            process = context.enter_context(BridgeProcess(
                settings, 100 + index, servicebus=stack.servicebus, event_key=key, logs=logs,
                airflow_url=airflow.url,
            ))  # fmt: skip
            bridges.append(_Bridge(process, key))
        yield bridges, settings, airflow


def _send(deliverers: list[Deliverer], jobs: list[Any], signing_key: str, senders: int) -> None:
    """Every job's completion, spread over the bridges, `senders` deliveries at a time."""
    batches = [(deliverers[i % len(deliverers)], [completion(job, signing_key)])
               for i, job in enumerate(jobs)]  # fmt: skip
    with ThreadPoolExecutor(max_workers=senders) as pool:
        replies = list(pool.map(lambda pair: pair[0].deliver(pair[1]), batches))
    unhandled = [r for r in replies if r["results"][0]["result"] != "handled"]
    if unhandled:
        raise RuntimeError(f"{len(unhandled)} deliveries were not handled, first: {unhandled[0]}")


def print_table(result: dict[str, Any]) -> None:
    rows = [
        [row["processes"], row["senders"], row["effects_per_s"], row["bridge_cores"],
         row["per_core"], row["cpu_ms_per_effect"]]
        for row in result["levels"]
    ]  # fmt: skip
    best = result["best"]
    title = (
        f"12. The bridge's own ceiling, Airflow a stand-in answering in {result['airflow_ms']} ms "
        f"(goal ≥ {GOAL_PER_CORE:.0f} effects/s per core); best {best['effects_per_s']}/s "
        f"at {best['per_core']}/s per bridge core"
    )
    headers = ["bridge processes", "senders", "effects/s", "bridge cores", "effects/s per core",
               "CPU ms/effect"]  # fmt: skip
    print(table(title, headers, rows))
