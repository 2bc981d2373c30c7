"""Throughput: sustained effects per second through the webhook, against a raw loop of
`POST /assets/events` at the same concurrency, in the same run.

The bridge is `bridge serve` in its own process (as one Function App instance), on its own ledger
table; each delivery is one signed completion event for a job of its own, sent over HTTP like
Event Grid, by 1, 4 or 16 senders at once. The raw loop posts the same number of asset events
with `apache-airflow-client` from the same number of threads. CPU seconds per component over each
run name the bottleneck: a component near one core (of two) is it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.data.tables import TableClient, UpdateMode

from bench.delivery import Deliverer
from bench.overhead import completion, seed
from bench.processes import cpu_seconds, group_cpu_seconds, own_cpu_seconds
from bench.report import table
from bench.stack import asset_ids
from bench.storage_model import describe
from bench.storage_model import modelled as storage_model_of
from bridge.adapters.airflow import AirflowRest
from bridge.local.chaos import BridgeProcess
from bridge.local.faults import FaultProxy
from bridge.local.stack import Stack
from bridge.settings import Settings

GOAL_AT_4 = 0.5
ROUNDS = 4  # each level alternates bridge and raw this many times
GOAL_REMOTE = 0.9  # where Airflow itself is the bottleneck


def run(
    stack: Stack,
    effects: int,
    uris: list[str],
    levels: tuple[int, ...],
    *,
    airflow_delay: float = 0.0,
    storage_model: bool = False,
) -> dict[str, Any]:
    """With `airflow_delay`, both sides reach Airflow through a proxy that adds that many seconds
    to every request: an Airflow across a network, which is then the bottleneck. With
    `storage_model`, the bridge reaches its ledger through Azure Table Storage's latency model
    (bench/storage_model.py)."""
    assert stack.airflow is not None
    table_name = f"throughput{secrets.token_hex(3)}"
    settings = Settings(**{**asdict(stack.settings), "ledger_table": table_name})
    with ExitStack() as context:
        airflow_url = stack.airflow.base_url
        if airflow_delay:
            airflow_url = context.enter_context(FaultProxy(airflow_url, delay=airflow_delay)).url
        served, model, floor_table = settings, None, None
        if storage_model:
            model = context.enter_context(storage_model_of(stack.azurite, settings))
            served = model.settings
            floor_table = context.enter_context(_floor_table(served))
        result = _run(stack, effects, uris, levels, airflow_url, settings=settings, served=served,
                      model_pid=model.pid if model else None, floor_table=floor_table)  # fmt: skip
    result["airflow_delay_ms"] = round(airflow_delay * 1000)
    result["storage_model"] = describe() if storage_model else None
    return result


def _run(
    stack: Stack,
    effects: int,
    uris: list[str],
    levels: tuple[int, ...],
    airflow_url: str,
    *,
    settings: Settings,
    served: Settings,
    model_pid: int | None = None,
    floor_table: TableClient | None = None,
) -> dict[str, Any]:
    """`settings` seed the ledger directly; the bridge serves with `served` (the same ledger,
    perhaps through the storage model). With `floor_table` (the same route), the floor's sides
    run beside them."""
    assert stack.airflow is not None and settings.ledger_table is not None
    table_name = settings.ledger_table
    rest = AirflowRest(airflow_url, stack.airflow.username, stack.airflow.password)
    ids = asset_ids(rest, uris)
    event_key = secrets.token_urlsafe(12)
    rows = []
    logs = Path(stack.airflow.home).parent / "bench-logs"
    with BridgeProcess(
        served,
        0,
        servicebus=stack.servicebus,
        event_key=event_key,
        logs=logs,
        airflow_url=airflow_url,
    ) as host:
        assert host.service is not None and host.service.process is not None
        groups = _groups(stack, host.service.process.pid)
        if model_pid is not None:
            groups["storage model"] = [model_pid]
        # The floor's sides: a claim written before the POST (the least that keeps two
        # deliveries of one event from both posting), and that claim settled after it (the least
        # that lets a redelivery know the POST was made).
        floors = {"claim_only": False, "claim_settle": True} if floor_table is not None else {}
        # A warm process, as a Function instance serving a stream is: token, asset ids, pools.
        deliverer = Deliverer(host.url, event_key)
        warm = seed(settings, table_name, uris, "warm")
        _send_all(deliverer, warm, settings.signing_key, 4)
        idle = _idle_cpu(host.service.process.pid)
        for level in levels:
            jobs = seed(settings, table_name, [uris[i % len(uris)] for i in range(effects)],
                        f"c{level}")  # fmt: skip
            targets = [ids[uris[i % len(uris)]] for i in range(effects)]
            bridge, raw = _Tally(groups), _Tally(groups)
            floor = {name: _Tally(groups) for name in floors}
            # Alternating rounds, so that drift (Airflow's housekeeping, the database's) falls
            # on both sides alike.
            step = -(-effects // ROUNDS)
            for start in range(0, effects, step):
                chunk = slice(start, start + step)
                bridge.time(partial(_send_all, deliverer, jobs[chunk], settings.signing_key,
                                    level))  # fmt: skip
                raw.time(partial(_raw_loop, rest, targets[chunk], level))
                for name, settles in floors.items():
                    assert floor_table is not None
                    rows_of = _Floor(floor_table, f"{name}-c{level}", settles=settles)
                    floor[name].time(partial(_raw_loop, rest, targets[chunk], level,
                                             floor=rows_of))  # fmt: skip
            rows.append({
                "concurrency": level,
                "effects": effects,
                "bridge_per_s": round(effects / bridge.seconds, 1),
                "raw_per_s": round(effects / raw.seconds, 1),
                "ratio": round(raw.seconds / bridge.seconds, 2),
                # Mean time per request as each side's senders saw it, and the ratio that time
                # alone allows at a fixed concurrency (Little's law): the measured ratio at this
                # bound means latency limits it (the ledger's round trips), below it capacity.
                "bridge_ms": round(1000 * bridge.mean_latency, 1),
                "raw_ms": round(1000 * raw.mean_latency, 1),
                "latency_bound": round(raw.mean_latency / bridge.mean_latency, 2),
                # The bridge process's own CPU (from /proc) per effect: what a Function
                # instance spends on one, serving the webhook included.
                "bridge_cpu_ms_per_effect": round(1000 * bridge.cpu["bridge"] / effects, 2),
                # The same less what the process spends idle over as long (the local host's
                # Service Bus trigger, whose receivers wake every second; in Azure the Functions
                # host does that, outside the Python worker).
                "bridge_cpu_ms_per_effect_net": round(
                    1000 * (bridge.cpu["bridge"] - idle * bridge.seconds) / effects, 2
                ),
                "bridge_idle_cpu_ms_per_s": round(1000 * idle, 2),
                "bridge_cpu_share": bridge.shares(),
                "raw_cpu_share": raw.shares(),
                "bottleneck": max(bridge.shares(), key=lambda name: bridge.shares()[name]),
                **_floor_row(floor, raw, bridge, effects),
            })  # fmt: skip
    at_4 = next((row["ratio"] for row in rows if row["concurrency"] == 4), None)
    return {"levels": rows, "ratio_at_4": at_4, "retried": dict(deliverer.retries),
            "goals": {"ratio_at_4": GOAL_AT_4, "ratio_remote": GOAL_REMOTE}}  # fmt: skip


IDLE_SECONDS = 10.0


def _idle_cpu(pid: int) -> float:
    """The bridge process's CPU seconds per second while it serves nothing. From `/proc/<pid>/stat`,
    which keeps the time of threads that have ended (the webhook's, as senders hang up), in ticks
    of 10 ms: over 10 s, about 7 ticks."""
    before = group_cpu_seconds(pid)
    time.sleep(IDLE_SECONDS)
    return max(0.0, group_cpu_seconds(pid) - before) / IDLE_SECONDS


def _groups(stack: Stack, bridge_pid: int) -> dict[str, list[int]]:
    assert stack.airflow is not None
    groups = stack.airflow.named_process_groups
    return {
        "airflow api": [groups["api-server"]],
        "airflow rest": [g for name, g in groups.items() if name != "api-server"],
        "azurite": [g for g in (stack.azurite.process_group,) if g is not None],
        "bridge": [bridge_pid],
    }


class _Tally:
    """Wall seconds and CPU seconds per component, summed over the rounds of one side."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.seconds = 0.0
        self.cpu: dict[str, float] = dict.fromkeys([*groups, "load generator"], 0.0)
        self.latencies: list[float] = []  # each request's, as its sender saw it

    def time(self, work: Callable[[list[float]], None]) -> None:
        counts, own = cpu_seconds(self.groups), own_cpu_seconds()
        started = time.perf_counter()
        work(self.latencies)
        self.seconds += time.perf_counter() - started
        now = cpu_seconds(self.groups)
        for name in self.groups:
            self.cpu[name] += now[name] - counts[name]
        self.cpu["load generator"] += own_cpu_seconds() - own

    @property
    def mean_latency(self) -> float:
        return sum(self.latencies) / len(self.latencies)

    def shares(self) -> dict[str, float]:
        """CPU used by each component, as a share of one core (2.0 = both cores)."""
        return {name: round(used / self.seconds, 2) for name, used in self.cpu.items()}


def _send_all(
    deliverer: Deliverer,
    jobs: list[Any],
    signing_key: str,
    concurrency: int,
    latencies: list[float] | None = None,
) -> None:
    batches = [[completion(job, signing_key)] for job in jobs]

    def deliver(batch: list[dict[str, Any]]) -> dict[str, Any]:
        started = time.perf_counter()
        reply = deliverer.deliver(batch)
        if latencies is not None:
            latencies.append(time.perf_counter() - started)
        return reply

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        replies = list(pool.map(deliver, batches))
    unhandled = [r for r in replies if r["results"][0]["result"] != "handled"]
    if unhandled:
        raise RuntimeError(f"{len(unhandled)} deliveries were not handled, first: {unhandled[0]}")


def _raw_loop(
    rest: Any, ids: list[int], concurrency: int, latencies: list[float], floor: _Floor | None = None
) -> None:
    """The baseline: the same library, a pool as large as the bridge's, the bridge's token. With
    `floor`, each POST comes after its claim and before its settle (table 3f)."""
    from airflow_client.client import ApiClient, AssetApi, Configuration, CreateAssetEventsBody

    from bridge.adapters.airflow import POOL_SIZE

    token = rest.api_client.configuration.access_token  # fresh: api_client renews it
    configuration = Configuration(host=rest.base_url, access_token=token)
    configuration.connection_pool_maxsize = POOL_SIZE
    api = AssetApi(ApiClient(configuration))

    def post(numbered: tuple[int, int]) -> None:
        index, asset_id = numbered
        started = time.perf_counter()
        claimed = floor.claim() if floor is not None else None
        api.create_asset_event(CreateAssetEventsBody(asset_id=asset_id, extra={"raw": index}))
        if floor is not None and claimed is not None:
            floor.settle(*claimed)
        latencies.append(time.perf_counter() - started)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(post, enumerate(ids)))


@contextmanager
def _floor_table(served: Settings) -> Iterator[TableClient]:
    """The floor's ledger table: the bridge's SDK and transport, on the route the bridge's ledger
    takes (through the model)."""
    from bridge.ledger.table import POOL_CONNECTIONS
    from bridge.ledger.transport import KeptAliveTransport

    assert served.ledger_connection_string is not None and served.ledger_table is not None
    with TableClient.from_connection_string(
        served.ledger_connection_string, table_name=served.ledger_table,
        transport=KeptAliveTransport(POOL_CONNECTIONS),
    ) as table:  # fmt: skip
        yield table


class _Floor:
    """One floor side's rows, in a partition of its own: each claim an insert-if-absent, as the
    bridge claims; with `settles`, each then merged done, If-Match its ETag."""

    def __init__(self, table: TableClient, side: str, *, settles: bool) -> None:
        self.table = table
        self.settles = settles
        self.partition = f"floor-{side}-{secrets.token_hex(3)}"
        self._rows = count()  # next() is atomic under the GIL: one row key per POST

    def claim(self) -> tuple[str, str]:
        """A new claim row: its key and ETag."""
        key = str(next(self._rows))
        meta = self.table.create_entity(
            {"PartitionKey": self.partition, "RowKey": key, "state": "in_progress"},
            response_preference="return-no-content",
        )
        return key, str(meta["etag"])

    def settle(self, key: str, etag: str) -> None:
        if self.settles:
            self.table.update_entity(
                {"PartitionKey": self.partition, "RowKey": key, "state": "completed"},
                mode=UpdateMode.MERGE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )


def _floor_row(
    floor: dict[str, _Tally], raw: _Tally, bridge: _Tally, effects: int
) -> dict[str, Any]:
    """Each floor side's rate, its ratio to raw, and the bridge's ratio to it."""
    row: dict[str, Any] = {}
    for name, tally in floor.items():
        row[f"floor_{name}_per_s"] = round(effects / tally.seconds, 1)
        row[f"floor_{name}_ratio"] = round(raw.seconds / tally.seconds, 2)
        row[f"floor_{name}_ms"] = round(1000 * tally.mean_latency, 1)
        row[f"bridge_to_floor_{name}"] = round(tally.seconds / bridge.seconds, 2)
    return row


def print_table(result: dict[str, Any]) -> None:
    rows = []
    for row in result["levels"]:
        share = row["bridge_cpu_share"]
        cpu = ", ".join(f"{name} {value:.2f}" for name, value in share.items())
        rows.append([row["concurrency"], row["bridge_per_s"], row["raw_per_s"], row["ratio"],
                     row.get("latency_bound"), row.get("bridge_ms"), row.get("raw_ms"),
                     row.get("bridge_cpu_ms_per_effect"), row.get("bridge_cpu_ms_per_effect_net"),
                     row["bottleneck"], cpu])  # fmt: skip
    delay = result.get("airflow_delay_ms")
    where = (
        f"Airflow {delay} ms away (goal ≥ {GOAL_REMOTE})"
        if delay
        else (f"all on 2 cores (goal at concurrency 4: ≥ {GOAL_AT_4})")
    )
    if result.get("storage_model"):
        where += ", ledger through Azure Table's latency model"
    title = (
        f"3. Throughput, effects/s over {result['levels'][0]['effects']} effects a level, {where}; "
        "CPU in cores while the bridge ran"
    )
    headers = [
        "concurrency",
        "bridge/s",
        "raw/s",
        "ratio",
        "latency bound",
        "bridge ms",
        "raw ms",
        "bridge CPU ms/effect",
        "less idle",
        "busiest",
        "cpu",
    ]
    print(table(title, headers, rows))
    floors = [row for row in result["levels"] if "floor_claim_only_ratio" in row]
    if floors:
        print(table(
            "3f. The floor: the least a forwarder that performs each effect once does, on the same "
            "ledger route (ratios to raw; the bridge's to each floor)",
            ["concurrency", "raw/s", "claim only /s", "ratio", "claim + settle /s", "ratio",
             "bridge/s", "ratio", "bridge / claim + settle"],
            [[row["concurrency"], row["raw_per_s"], row["floor_claim_only_per_s"],
              row["floor_claim_only_ratio"], row["floor_claim_settle_per_s"],
              row["floor_claim_settle_ratio"], row["bridge_per_s"], row["ratio"],
              row["bridge_to_floor_claim_settle"]] for row in floors],
        ))  # fmt: skip
