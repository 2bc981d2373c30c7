"""Worker time and API calls per job, the bridge against each poller, for jobs of 1 minute, 1 hour
and 8 hours.

Measured in this run: the operator's submit (validate and send, what the DAG task does), the
Azure ML calls `azure-ai-ml` makes to create one job (counted at the emulator), and the mean
`jobs.get` latency the pollers saw. Computed from those, for each duration: the pollers' GETs
(the SDK's stream backoff simulated with its own function; fixed intervals divided out), the
bridge's reconciliation reads (its own backoff: first at 10 minutes, doubling to an hour), and the
worker-seconds each way holds a slot. The cost of 1,000 jobs follows (bench/cost.py).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from bench import cost
from bench.push_vs_poll import stream_wait
from bench.report import table
from bridge.contracts import Submission
from bridge.local.stack import Stack
from bridge.provider.senders import ServiceBusSender
from bridge.reconcile import MAX_BACKOFF_SECONDS

DURATIONS = {"1 minute": 60.0, "1 hour": 3600.0, "8 hours": 28800.0}
GRACE_SECONDS = 600.0  # BRIDGE_RECONCILE_AFTER_SECONDS in Azure
JOBS_PER_DAY = 1000.0  # for the reconcile timer's share of the bill
OPERATOR_QUEUE = "bench-operator"  # not the bridge's: nothing consumes what is sent here


def stream_polls(seconds: float) -> int:
    """How many `jobs.get` azure-ai-ml's stream makes over a job of this length."""
    elapsed, polls = 0.0, 0
    while elapsed < seconds:
        elapsed += stream_wait(elapsed)
        polls += 1
    return polls


def reconcile_reads(seconds: float) -> int:
    """How many times reconciliation reads a job still running after `seconds` (bridge.reconcile:
    due after the grace, then grace * 2^checks, at most an hour apart)."""
    due, checks, reads = GRACE_SECONDS, 0, 0
    while due < seconds:
        reads += 1
        due += min(GRACE_SECONDS * 2**checks, MAX_BACKOFF_SECONDS)
        checks += 1
    return reads


def run(stack: Stack, measured: dict[str, Any], rounds: int) -> dict[str, Any]:
    send = _operator_send_seconds(stack, rounds)
    creates = _create_calls(stack)
    get_seconds = float(measured.get("jobs_get_seconds_mean") or 0.0)
    rows = []
    for label, seconds in DURATIONS.items():
        peers = {
            "bridge": (send, reconcile_reads(seconds)),
            "stream": (seconds + send, stream_polls(seconds)),
            "poll10": (send, math.ceil(seconds / 10)),
            "poll5": (send, math.ceil(seconds / 5)),
            "watcher": (send, 0),
        }
        for peer, (worker_seconds, gets) in peers.items():
            rows.append({
                "duration": label,
                "peer": peer,
                "worker_seconds": round(worker_seconds, 3),
                "azureml_calls": creates + gets,
                "azureml_get_seconds": round(gets * get_seconds, 2),
                "airflow_calls": 1,
                "queue_receives": math.ceil(seconds / 60) if peer == "watcher" else 0,
            })  # fmt: skip
    bills = {
        label: {
            "bridge": cost.bridge_per_1000(JOBS_PER_DAY, reconcile_reads(seconds)),
            "blocking poller": cost.poller_per_1000(seconds),
        }
        for label, seconds in DURATIONS.items()
    }
    return {
        "measured": {
            "operator_send_seconds_p50": round(send, 4),
            "azureml_calls_per_create": creates,
            "jobs_get_seconds_mean": get_seconds,
        },
        "rows": rows,
        "cost_per_1000_jobs": bills,
        "prices": cost.prices(),
    }


def _operator_send_seconds(stack: Stack, rounds: int) -> float:
    """The DAG task's own work: build and validate the submission, send it (to a queue of the
    local Service Bus, with the operator's own sender)."""
    if not stack.servicebus.namespace.has_entity(OPERATOR_QUEUE):
        stack.servicebus.create_queue(OPERATOR_QUEUE)
    sender = ServiceBusSender(stack.servicebus.address, OPERATOR_QUEUE, development_emulator=True)
    samples = []
    try:
        for index in range(rounds + 1):
            started = time.perf_counter()
            job = Submission.model_validate(
                {"origin": {"dag_id": "bench", "run_id": f"op-{index}", "task_id": "submit"},
                 "job": {"command": "true", "environment": "azureml:e:1", "compute": "c"},
                 "on": {"completed": ["bench://load/0"]}}
            )  # fmt: skip
            sender.send(job)
            if index:  # the first send opens the connection and the link
                samples.append(time.perf_counter() - started)
    finally:
        sender.close()
    return statistics.median(samples)


def _create_calls(stack: Stack) -> int:
    """HTTP requests azure-ai-ml makes to create one command job, counted at the emulator."""
    job = Submission.model_validate(
        {"origin": {"dag_id": "bench", "run_id": f"count-{time.time_ns()}", "task_id": "s"},
         "job": {"command": "true", "environment": "azureml:e:1", "compute": "cpu-cluster"},
         "on": {"completed": ["bench://load/0"]}}
    )  # fmt: skip
    before = len(stack.emulator.requests)
    stack.bridge.submit(job.to_json().encode(), f"count-{job.id}")
    return len(stack.emulator.requests) - before


def print_tables(result: dict[str, Any]) -> None:
    rows = [[r["duration"], r["peer"], f"{r['worker_seconds']:.3f}", r["azureml_calls"],
             r["azureml_get_seconds"], r["queue_receives"]] for r in result["rows"]]  # fmt: skip
    m = result["measured"]
    submit_ms = m["operator_send_seconds_p50"] * 1000
    title = (
        f"4. Per job (computed from measured costs: submit {submit_ms:.1f} ms, "
        f"{m['azureml_calls_per_create']} Azure ML calls to create, jobs.get "
        f"{m['jobs_get_seconds_mean'] * 1000:.0f} ms)"
    )
    header = ["job", "peer", "worker s", "Azure ML calls", "GET s", "queue receives"]
    print(table(title, header, rows))
    bill_rows = []
    for label, bills in result["cost_per_1000_jobs"].items():
        bridge, poller = bills["bridge"], bills["blocking poller"]
        bill_rows.append([label, bridge["total_usd"], bridge["executions"],
                          bridge["azureml_reads"], poller["slot_hours"],
                          poller["total_usd"]])  # fmt: skip
    print(table("5. Cost per 1,000 jobs in Azure, USD (formula and prices: bench/cost.py)",
                ["job", "bridge $", "executions", "reconcile reads", "poller slot-h",
                 "poller $"], bill_rows))  # fmt: skip
