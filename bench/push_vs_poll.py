"""Completion → downstream DAG run: Event Grid push through the bridge against every poller.

The same jobs (staggered, random durations, `sleep N` in the Azure ML emulator) are watched by
five peers at once, each feeding an asset of its own per job with a consumer DAG of its own
(`consume_<peer>_<i>`), so no peer's event coalesces with another's:

- `push`: the bridge. The emulator publishes the job's events to Event Grid (here: its local
  topic), which delivers to the webhook; the bridge posts the asset event.
- `stream`: the Azure ML provider's way, a task blocking on the job: `jobs.get` at the SDK's own
  stream backoff (`azure.ai.ml`'s `_wait_before_polling`: 2 s growing to 60 s), then the asset
  event its outlet produces.
- `poll10`, `poll5`: a deferrable-style trigger (Kestra, Dagster sensors) calling `jobs.get`
  every 10 s / 5 s, then the asset event.
- `watcher`: an Airflow 3 `AssetWatcher` whose trigger polls a Service Bus queue every 60 s,
  the Azure provider's Service Bus trigger default (on the local Service Bus here), fed by an
  Event Grid subscription that puts the job's terminal event on that queue as it happens.

Pollers run as threads of this process and post the asset event as soon as they see the
terminal status: they skip the deferred task's resume on a worker and the blocking task's own
completion, which favours them. Measured per job: job end (the emulator's clock) → consumer run
created (`queued_at`) and → started (`start_date`).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from azure.servicebus import ServiceBusClient, ServiceBusMessage

from bench.report import percentile, table
from bench.stack import WATCH_QUEUE
from bridge.composition import azureml_jobs
from bridge.contracts import Submission
from bridge.local.stack import Stack

PEERS = ("push", "stream", "poll10", "poll5", "watcher")
LABELS = {
    "push": "bridge (Event Grid push)",
    "stream": "provider task, SDK stream backoff 2-60 s",
    "poll10": "trigger polling jobs.get every 10 s",
    "poll5": "trigger polling jobs.get every 5 s",
    "watcher": "AssetWatcher on a queue polled every 60 s",
}
TERMINAL = ("Completed", "Failed", "Canceled")
GOALS = {"stream": 10.0, "watcher": 10.0, "poll10": 2.0, "poll5": 2.0}  # times slower than push


@dataclass(frozen=True)
class Options:
    jobs: int
    stagger: float  # seconds between submissions
    shortest: float  # job durations are uniform in [shortest, longest]
    longest: float
    scale: float = 1.0  # every polling interval is multiplied by this (QUICK: 0.1)
    seed: int = 20261126


FULL = Options(jobs=30, stagger=2.0, shortest=30.0, longest=180.0)
QUICK = Options(jobs=6, stagger=1.0, shortest=5.0, longest=16.0, scale=0.1)


def stream_wait(elapsed: float) -> float:
    """azure-ai-ml's own wait between polls of a streamed job (a sigmoid from 2 s to 60 s)."""
    from azure.ai.ml.operations._job_ops_helper import _wait_before_polling

    return float(_wait_before_polling(elapsed))


class Poller(threading.Thread):
    """One peer watching one job: sleep, `jobs.get`, until terminal; then the asset event."""

    def __init__(
        self,
        peer: str,
        job: str,
        uri: str,
        *,
        wait: Callable[[float], float],  # seconds to sleep before the next poll, by time polled
        find: Callable[[str], Any],
        post: Callable[[str, dict[str, Any]], None],
        deadline: float,
    ) -> None:
        super().__init__(name=f"{peer}-{job}", daemon=True)
        self.peer, self.job, self.uri = peer, job, uri
        self.wait, self.find, self.post = wait, find, post
        self.deadline = deadline
        self.calls = 0
        self.call_seconds = 0.0
        self.error: str | None = None

    def run(self) -> None:
        began = time.monotonic()
        try:
            while time.monotonic() < self.deadline:
                time.sleep(self.wait(time.monotonic() - began))
                started = time.perf_counter()
                found = self.find(self.job)
                self.call_seconds += time.perf_counter() - started
                self.calls += 1
                if found is not None and found.status in TERMINAL:
                    self.post(self.uri, {"job_name": self.job, "status": found.status})
                    return
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"


def run(stack: Stack, options: Options) -> dict[str, Any]:
    assert stack.airflow is not None
    rng = random.Random(options.seed)
    durations = [round(rng.uniform(options.shortest, options.longest)) for _ in range(options.jobs)]
    horizon = options.jobs * options.stagger + options.longest + 120 * options.scale + 90
    deadline = time.monotonic() + horizon
    adapter = azureml_jobs(stack.settings)
    rest = stack.airflow.rest()
    queues = [WATCH_QUEUE.format(index=i) for i in range(options.jobs)]
    missing = [queue for queue in queues if not stack.servicebus.namespace.has_entity(queue)]
    if missing:  # bench_stack creates them before Airflow starts, as the watchers need them
        raise RuntimeError(f"no watch queue(s) {', '.join(missing)} on the local Service Bus")
    waits: dict[str, Callable[[float], float]] = {
        "stream": lambda t: stream_wait(t / options.scale) * options.scale,
        "poll10": lambda t: 10.0 * options.scale,
        "poll5": lambda t: 5.0 * options.scale,
    }
    pollers: list[Poller] = []
    feeders: list[threading.Thread] = []
    names: list[str] = []
    submit_seconds: list[float] = []
    for index, duration in enumerate(durations):
        job = _job(index, duration)
        started = time.perf_counter()
        report = stack.bridge.submit(job.to_json().encode(), f"bench-{job.id}")
        submit_seconds.append(time.perf_counter() - started)
        if report.result.value != "created":
            raise RuntimeError(f"bench job {job.id} was not created: {report}")
        names.append(job.id)
        for peer, wait in waits.items():
            poller = Poller(peer, job.id, f"bench://{peer}/{index}", wait=wait,
                            find=adapter.find, post=rest.post_asset_event,
                            deadline=deadline)  # fmt: skip
            poller.start()
            pollers.append(poller)
        feeder = threading.Thread(target=_feed, args=(stack, job.id, queues[index], horizon),
                                  daemon=True)  # fmt: skip
        feeder.start()
        feeders.append(feeder)
        time.sleep(options.stagger)
    runs = _wait_for_runs(stack, options.jobs, deadline)
    for poller in pollers:
        poller.join(timeout=1)
        if poller.error:
            raise RuntimeError(f"poller {poller.name} failed: {poller.error}")
    return _result(stack, options, names, durations, runs, pollers=pollers, submits=submit_seconds)


def _job(index: int, duration: float) -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": "bench", "run_id": f"push-{time.time_ns()}-{index}",
                       "task_id": "submit"},
            "job": {"command": f"sleep {duration}", "environment": "azureml:bench:1",
                    "compute": "cpu-cluster", "experiment_name": "bench"},
            "on": {"completed": [f"bench://push/{index}"]},
        }
    )  # fmt: skip


def _feed(stack: Stack, name: str, queue: str, timeout: float) -> None:
    """Event Grid → Service Bus queue: the job's terminal event lands on its queue as it happens.

    A client of its own per feeder thread (the SDK's sync clients are not thread-safe), its
    sender opened before the wait: opening takes the SDK about half a second, which would
    otherwise count against the watcher.
    """
    with (
        ServiceBusClient.from_connection_string(stack.servicebus.connection_string) as client,
        client.get_queue_sender(queue) as sender,
    ):
        status = stack.emulator.wait_for_status(name, TERMINAL, timeout=timeout)
        body = json.dumps({"runId": name, "runStatus": status})
        sender.send_messages(ServiceBusMessage(body, content_type="application/json"))


def _wait_for_runs(stack: Stack, jobs: int, deadline: float) -> dict[tuple[str, int], Any]:
    assert stack.airflow is not None
    found: dict[tuple[str, int], Any] = {}
    wanted = [(peer, i) for peer in PEERS for i in range(jobs)]
    while time.monotonic() < deadline:
        for peer, index in wanted:
            if (peer, index) in found:
                continue
            started = [r for r in stack.airflow.runs(f"consume_{peer}_{index}")
                       if r.start_date and r.queued_at]  # fmt: skip
            if started:
                found[(peer, index)] = min(started, key=attrgetter("queued_at"))
        if len(found) == len(wanted):
            return found
        time.sleep(2)
    missing = sorted(set(wanted) - set(found))
    raise TimeoutError(f"{len(missing)} consumer runs never started, e.g. {missing[:5]}")


def _result(
    stack: Stack,
    options: Options,
    names: list[str],
    durations: list[int],
    runs: dict[tuple[str, int], Any],
    *,
    pollers: list[Poller],
    submits: list[float],
) -> dict[str, Any]:
    ends = []
    for name in names:
        job = stack.emulator.job(name)
        assert job is not None
        ends.append(next(wall for status, _, wall in job.history if status in TERMINAL))
    latencies: dict[str, dict[str, list[float]]] = {}
    posted = _asset_event_times(stack, len(names))
    for peer in PEERS:
        told = [posted[(peer, i)] - ends[i] for i in range(len(names))]
        created = [runs[(peer, i)].queued_at.timestamp() - ends[i] for i in range(len(names))]
        started = [runs[(peer, i)].start_date.timestamp() - ends[i] for i in range(len(names))]
        latencies[peer] = {"told": told, "created": created, "started": started}
    push = percentile(latencies["push"]["created"], 50)
    peers = {}
    for peer in PEERS:
        told = latencies[peer]["told"]
        created, started = latencies[peer]["created"], latencies[peer]["started"]
        mine = [p for p in pollers if p.peer == peer]
        peers[peer] = {
            "label": LABELS[peer],
            "asset_event_p50_s": round(percentile(told, 50), 2),
            "asset_event_p95_s": round(percentile(told, 95), 2),
            "created_p50_s": round(percentile(created, 50), 2),
            "created_p95_s": round(percentile(created, 95), 2),
            "started_p50_s": round(percentile(started, 50), 2),
            "started_p95_s": round(percentile(started, 95), 2),
            "ratio_to_push_p50": round(percentile(created, 50) / push, 1),
            "goal_ratio": GOALS.get(peer),
            "azureml_calls_per_job": round(sum(p.calls for p in mine) / len(mine), 1)
            if mine else 0.0,
            "created_s": [round(value, 3) for value in created],
        }  # fmt: skip
    gets = [p.call_seconds / p.calls for p in pollers if p.calls]
    return {
        "jobs": len(names),
        "durations_s": durations,
        "interval_scale": options.scale,
        "peers": peers,
        "jobs_get_seconds_mean": round(sum(gets) / len(gets), 4) if gets else None,
        "bridge_submit_seconds_p50": round(percentile(submits, 50), 4),
    }


def _asset_event_times(stack: Stack, jobs: int) -> dict[tuple[str, int], float]:
    """When Airflow recorded each peer's asset event for each job (its first on the asset)."""
    from airflow_client.client import AssetApi

    assert stack.airflow is not None
    rest = stack.airflow.rest()
    times = {}
    for peer in PEERS:
        for index in range(jobs):
            asset_id = rest.asset_id(f"bench://{peer}/{index}")
            page = AssetApi(rest.api_client).get_asset_events(
                asset_id=asset_id, order_by=["timestamp"], limit=1
            )
            times[(peer, index)] = page.asset_events[0].timestamp.timestamp()
    return times


def print_table(result: dict[str, Any]) -> None:
    rows = []
    for peer in PEERS:
        r = result["peers"][peer]
        goal = f"≥ {r['goal_ratio']:.0f}x" if r["goal_ratio"] else ""
        rows.append([r["label"], r["asset_event_p50_s"], r["created_p50_s"], r["created_p95_s"],
                     r["started_p50_s"], r["started_p95_s"], r["ratio_to_push_p50"], goal,
                     r["azureml_calls_per_job"]])  # fmt: skip
    scale = result["interval_scale"]
    note = "" if scale == 1 else f"; QUICK: every polling interval x{scale}"
    title = (
        f"1. Job end → consumer DAG run, {result['jobs']} jobs of "
        f"{min(result['durations_s'])}-{max(result['durations_s'])} s (seconds{note})"
    )
    header = ["peer", "asset event p50", "run created p50", "p95", "started p50", "p95",
              "x push", "goal", "GETs/job"]  # fmt: skip
    print(table(title, header, rows))
