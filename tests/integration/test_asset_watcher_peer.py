"""The benchmark's poller peer: an `AssetWatcher` whose trigger reads a Service Bus queue.

A real Airflow with a triggerer, on PostgreSQL, and the local Service Bus: each queue message
becomes an asset event (its payload in `extra`) and a run of the DAG scheduled on that asset; the
trigger completes the message, so the queue is empty afterwards.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow_client.client import AssetApi
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue

from bridge.local.airflow import LocalAirflow, fresh_postgres_database
from bridge.local.servicebus import LocalServiceBus

pytestmark = pytest.mark.integration

TRIGGER = Path(__file__).resolve().parents[2] / "bench" / "airflow" / "queue_watcher.py"
QUEUE, URI, CONSUMER = "watch-0", "bench://watch/0", "watch_consumer"
POLL_INTERVAL, MAX_WAIT_TIME = 2.0, 1.0  # each cycle: a 1 s receive, then a 2 s sleep
DAG_FILE = f"""
import os

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Asset, AssetWatcher
from queue_watcher import ServiceBusQueueTrigger

trigger = ServiceBusQueueTrigger(
    os.environ["WATCH_CONNECTION_STRING"],
    {QUEUE!r},
    poll_interval={POLL_INTERVAL},
    max_wait_time={MAX_WAIT_TIME},
)
watched = Asset({URI!r}, watchers=[AssetWatcher(name="watch_0", trigger=trigger)])

with DAG({CONSUMER!r}, schedule=[watched], catchup=False):
    EmptyOperator(task_id="consume")
"""


@pytest.fixture(scope="module")
def bus() -> Iterator[LocalServiceBus]:
    with LocalServiceBus() as running:
        running.create_queue(QUEUE)  # before Airflow: the trigger reads it once it runs
        yield running


@pytest.fixture(scope="module")
def airflow(
    tmp_path_factory: pytest.TempPathFactory, bus: LocalServiceBus
) -> Iterator[LocalAirflow]:
    root = tmp_path_factory.mktemp("watcher")
    dags, home = root / "dags", root / "airflow"
    dags.mkdir()
    (dags / "watch_consumer.py").write_text(DAG_FILE)
    # The triggerer does not put the DAGs folder on sys.path (only the DAG processor does, per
    # bundle), but every Airflow process puts the plugins folder there.
    (home / "plugins").mkdir(parents=True)
    shutil.copy(TRIGGER, home / "plugins" / TRIGGER.name)
    with LocalAirflow(
        home,
        dags,
        database_url=fresh_postgres_database("bridge_watch"),
        extra_env={"WATCH_CONNECTION_STRING": bus.connection_string},
        triggerer=True,
    ) as running:
        running.wait_for_dags([CONSUMER], timeout=90)
        yield running


def asset_events(airflow: LocalAirflow) -> list[Any]:
    asset_id = airflow.rest().asset_id(URI)
    return list(AssetApi(airflow.client()).get_asset_events(asset_id=asset_id).asset_events)


def send_and_wait(airflow: LocalAirflow, bus: LocalServiceBus, body: str, runs: int) -> datetime:
    """Send one message and wait until the consumer has `runs` runs; when it was sent."""
    deadline = time.monotonic() + 30
    with (
        ServiceBusClient.from_connection_string(bus.connection_string) as client,
        client.get_queue_sender(QUEUE) as sender,
    ):
        sent = datetime.now(UTC)
        sender.send_messages(ServiceBusMessage(body, message_id=f"id-{body}"))
    while len(airflow.runs(CONSUMER)) < runs:
        assert time.monotonic() < deadline, f"no run {runs} of {CONSUMER} within 30 s"
        time.sleep(0.25)
    return sent


def test_each_message_starts_a_run_with_its_payload_on_the_asset_event(
    airflow: LocalAirflow, bus: LocalServiceBus
) -> None:
    sent = [send_and_wait(airflow, bus, f"message-{n}", runs=n) for n in (1, 2)]
    runs = airflow.wait_for_runs(CONSUMER, 2, timeout=60)
    assert [run.state.value for run in runs] == ["success", "success"]

    events = asset_events(airflow)
    assert [event.extra["payload"]["message"] for event in events] == ["message-1", "message-2"]
    for event, run, at in zip(events, runs, sent, strict=True):
        assert event.extra["from_trigger"] is True
        payload = event.extra["payload"]
        assert payload["queue"] == QUEUE
        assert payload["message_id"] == f"id-{payload['message']}"
        enqueued = datetime.fromisoformat(payload["enqueued_time"])
        assert abs((enqueued - at).total_seconds()) < 5
        print(f"{payload['message']}: asset event {(event.timestamp - at).total_seconds():.2f}s, "
              f"run queued {(run.queued_at - at).total_seconds():.2f}s after the send; "
              f"extra={event.extra}")  # fmt: skip
    # Completed before the event was yielded: nothing left on the queue, locked or not, and
    # nothing dead-lettered.
    with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        for sub_queue in (None, ServiceBusSubQueue.DEAD_LETTER):
            with client.get_queue_receiver(QUEUE, sub_queue=sub_queue) as receiver:
                assert receiver.peek_messages(max_message_count=10, sequence_number=1) == []
