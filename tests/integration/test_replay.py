"""`bridge replay` against the local stack: what Event Grid dead-lettered and what the submission
queue gave up on goes through the same path as live traffic, once; a second replay changes nothing.

The dead-letter blobs are written by the local Event Grid exactly as Event Grid writes them; the
dead-lettered submissions are in a queue's `$deadletterqueue` on the stack's local Service Bus,
where Service Bus put them after the queue's max delivery count, read with `azure-servicebus`.
Each test has a ledger table of its own, so the dev host's reconcile timer never routes its jobs;
each Service Bus test a queue of its own, with no dev host but its own (if any) receiving it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusReceivedMessage,
    ServiceBusReceiver,
    ServiceBusSubQueue,
)

from bridge.adapters.dead_letters import DeadLetterBlobs
from bridge.composition import build
from bridge.contracts import TAG_SIGNATURE, Submission
from bridge.errors import TransientError
from bridge.events import RUN_COMPLETED
from bridge.ledger import JobState
from bridge.local.dead_letter import CONTAINER, DeadLetterContainer
from bridge.local.devhost import DevHost
from bridge.local.event_grid import EventGridTopic
from bridge.local.process import free_port
from bridge.local.servicebus import (
    DEAD_LETTER_SUFFIX,
    MAX_DELIVERY_COUNT_DESCRIPTION,
    MAX_DELIVERY_COUNT_EXCEEDED,
)
from bridge.local.stack import Stack
from bridge.provider.senders import ServiceBusSender
from bridge.replay import Replayer
from bridge.service import Bridge, Result
from bridge.settings import SERVICEBUS_CONNECTION, SUBMISSION_QUEUE, Settings
from tests.integration.conftest import eventually, job_events, job_tags, own_ledger, run_bridge

pytestmark = pytest.mark.integration

DONE = "azureml://bridge-tests/loop/completed"


@pytest.fixture
def settings(loop_stack: Stack) -> Settings:
    return own_ledger(loop_stack, "replay")


@pytest.fixture
def bridge(settings: Settings) -> Bridge:
    return build(settings)


def submission() -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": "replay_tests", "run_id": secrets.token_hex(6),
                       "task_id": "submit"},
            "job": {"command": "echo done", "environment": "azureml:env:1",
                    "compute": "cpu-cluster", "experiment_name": "replay"},
            "on": {"completed": [DONE]},
        }
    )  # fmt: skip


def completed_job(stack: Stack, bridge: Bridge) -> Submission:
    job = submission()
    assert bridge.submit(job.to_json().encode(), job.id).result is Result.CREATED
    stack.emulator.wait_for_status(job.id, ["Completed"], timeout=20)
    return job


def run_completed(stack: Stack, job: Submission) -> dict[str, Any]:
    tags = job_tags(stack, job.id)
    assert TAG_SIGNATURE in tags
    return {
        "id": secrets.token_hex(8), "topic": stack.emulator.workspace_id,
        "subject": f"experiments/e/runs/{job.id}", "eventType": RUN_COMPLETED,
        "eventTime": "2026-11-26T10:00:00.0000000+00:00", "dataVersion": "2",
        "metadataVersion": "1",
        "data": {"experimentName": "replay", "runId": job.id, "RunTags": tags},
    }  # fmt: skip


def dead_letter(stack: Stack, event: dict[str, Any], container: str = CONTAINER) -> str:
    """Publish the event to a webhook nobody serves: the local Event Grid dead-letters it."""
    blobs = DeadLetterContainer(stack.azurite.connection_string, container)
    written: list[str] = []
    topic = EventGridTopic(
        access_key="k",
        webhook_url=f"http://127.0.0.1:{free_port()}/api/events",
        retry_delays=(0.05,),
        dead_letter=lambda delivery: written.append(blobs.write(delivery)),
    ).start()
    try:
        [delivery] = [topic.publish(event)]
        topic.settled(1, timeout=10)
    finally:
        topic.stop()
        blobs.close()
    assert delivery.outcome == "dead-lettered" and len(written) == 1
    return written[0]


def test_dead_letter_blob_is_written_as_event_grid_writes_it(loop_stack: Stack) -> None:
    event = {"id": "e-1", "eventType": RUN_COMPLETED, "subject": "s", "data": {}}
    container = f"dl{secrets.token_hex(4)}"
    name = dead_letter(loop_stack, event, container)
    parts = name.split("/")
    assert parts[0] == "BRIDGE-TERMINAL-JOB-EVENTS" and len(parts) == 6
    assert parts[-1].endswith(".json") and not parts[2].startswith("0")
    [item] = DeadLetterBlobs.from_connection_string(
        loop_stack.azurite.connection_string, container
    ).items()
    [stored] = json.loads(item.body)
    assert stored["id"] == "e-1" and stored["deadLetterReason"] == "MaxDeliveryAttemptsExceeded"
    assert stored["deliveryAttempts"] == 2 and stored["lastDeliveryOutcome"] == (
        "ServiceRequestError"
    )  # fmt: skip


def test_replayed_dead_letter_performs_the_missing_effect_once(
    loop_stack: Stack, bridge: Bridge
) -> None:
    job = completed_job(loop_stack, bridge)
    container = f"dl{secrets.token_hex(4)}"
    event = run_completed(loop_stack, job)
    dead_letter(loop_stack, event, container)
    blobs = DeadLetterBlobs.from_connection_string(loop_stack.azurite.connection_string, container)

    [preview] = Replayer(bridge, dry_run=True).replay(blobs.items())
    assert (preview.subject, preview.result) == (event["id"], "would route")
    assert job_events(loop_stack, DONE, job.id) == []  # a dry run changes nothing

    [first] = Replayer(bridge).replay(blobs.items())
    [second] = Replayer(bridge).replay(blobs.items())

    assert (first.result, second.result) == ("handled", "duplicate")
    [routed] = job_events(loop_stack, DONE, job.id)
    assert routed.extra["event_id"] == event["id"] and routed.extra["via"] == "event"


def bridge_cli(settings: Settings, env: dict[str, str], *args: str) -> tuple[int, str]:
    done = run_bridge(settings, *args, env=env)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, done.stdout


def replay_json(settings: Settings, env: dict[str, str], *args: str) -> dict[str, dict[str, Any]]:
    """`bridge replay --json` (with these arguments): each line by its subject; it exits 0."""
    code, out = bridge_cli(settings, env, "replay", "--json", *args)
    assert code == 0, out
    return {line["subject"]: line for line in json.loads(out)}


def new_queue(stack: Stack, prefix: str, *, max_delivery_count: int) -> str:
    """A submission queue of the test's own on the stack's Service Bus."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    stack.servicebus.create_queue(name, max_delivery_count=max_delivery_count)
    return name


def servicebus_env(stack: Stack, queue: str) -> dict[str, str]:
    """What the Function App's trigger and `bridge replay` read locally: the connection (the
    development emulator's connection string) and the queue."""
    return {SERVICEBUS_CONNECTION: stack.servicebus.connection_string, SUBMISSION_QUEUE: queue}


def send(stack: Stack, queue: str, job: Submission) -> None:
    """As the operator sends: its Service Bus sender, on the stack's local Service Bus."""
    sender = ServiceBusSender(stack.servicebus.address, queue, development_emulator=True)
    try:
        sender.send(job)
    finally:
        sender.close()


@contextmanager
def receiver(stack: Stack, queue: str, *, dead: bool = False) -> Iterator[ServiceBusReceiver]:
    sub_queue = ServiceBusSubQueue.DEAD_LETTER if dead else None
    with (
        ServiceBusClient.from_connection_string(stack.servicebus.connection_string) as client,
        client.get_queue_receiver(queue, sub_queue=sub_queue, max_wait_time=5) as opened,
    ):
        yield opened


def dead_letters(stack: Stack, queue: str) -> list[ServiceBusReceivedMessage]:
    """The queue's `$deadletterqueue`, peeked through the SDK (nothing locked, nothing taken)."""
    with receiver(stack, queue, dead=True) as dead:
        return list(dead.peek_messages(max_message_count=100, sequence_number=1))


def test_bridge_replay_reads_the_stacks_dead_letters_and_dead_letter_queue(
    loop_stack: Stack, bridge: Bridge, settings: Settings
) -> None:
    finished = completed_job(loop_stack, bridge)
    event = run_completed(loop_stack, finished)
    dead_letter(loop_stack, event)  # the stack's own container, as Event Grid's in Azure
    waiting = submission()  # a submission the queue gave up on: one delivery, abandoned
    queue = new_queue(loop_stack, "given-up", max_delivery_count=1)
    send(loop_stack, queue, waiting)
    with receiver(loop_stack, queue) as taken:
        [message] = taken.receive_messages(max_message_count=1, max_wait_time=5)
        taken.abandon_message(message)
    [letter] = dead_letters(loop_stack, queue)
    assert (letter.message_id, letter.dead_letter_reason) == (
        waiting.id,
        MAX_DELIVERY_COUNT_EXCEEDED,
    )
    env = servicebus_env(loop_stack, queue)

    lines = replay_json(settings, env, "--dry-run")
    assert lines[event["id"]]["result"] == "would route"
    assert lines[waiting.id]["result"] == "would create"
    assert lines[waiting.id]["source"] == "servicebus-deadletter"
    assert loop_stack.emulator.job(waiting.id) is None
    assert len(dead_letters(loop_stack, queue)) == 1  # a dry run only peeks

    lines = replay_json(settings, env)
    assert (lines[event["id"]]["result"], lines[waiting.id]["result"]) == ("handled", "created")
    assert loop_stack.emulator.job(waiting.id) is not None
    assert len(job_events(loop_stack, DONE, finished.id)) == 1
    assert dead_letters(loop_stack, queue) == []  # completed once replayed

    code, out = bridge_cli(settings, env, "replay", "--source", "dead-letters",
                           "--source", "servicebus")  # fmt: skip
    assert code == 0 and waiting.id not in out  # the replayed message left the dead-letter queue
    assert "duplicate" in out.split(event["id"])[1].splitlines()[0]
    assert len(job_events(loop_stack, DONE, finished.id)) == 1


def unreachable(connection_string: str) -> str:
    """The same storage account, its table endpoint on a port nobody listens on."""
    return re.sub(r"(TableEndpoint=http://127\.0\.0\.1:)\d+", rf"\g<1>{free_port()}",
                  connection_string)  # fmt: skip


def test_a_submission_that_fails_max_delivery_count_times_is_dead_lettered_and_replayed_once(
    loop_stack: Stack, bridge: Bridge, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's "done when": a message that fails maxDeliveryCount times is in the dead-letter
    sub-queue with its reason, and `bridge replay` re-drives it once.

    The failure is a real one: the dev host's bridge cannot reach its ledger, so `Bridge.submit`
    raises, the trigger abandons the message, Service Bus redelivers it at once and, after the
    queue's max delivery count, dead-letters it. With the ledger back, `bridge replay` creates the
    job, once."""
    deliveries = 3
    queue = new_queue(loop_stack, "no-ledger", max_delivery_count=deliveries)
    broken = dataclasses.replace(
        settings,
        ledger_connection_string=unreachable(settings.ledger_connection_string or ""),
        reconcile_schedule="0 0 0 1 1 *",  # its timer would fail the same way: not in this test
    )
    broken_bridge = build(broken)
    job = submission()
    host = DevHost(lambda: broken_bridge, broken,
                   servicebus_connection_string=loop_stack.servicebus.connection_string,
                   queue_name=queue)  # fmt: skip
    with host, caplog.at_level(logging.ERROR, logger="bridge.devhost"):
        send(loop_stack, queue, job)
        [letter] = eventually(lambda: dead_letters(loop_stack, queue), what="dead-lettered")
    # Each delivery failed for the reason given: the ledger could not be reached.
    failures = [r for r in caplog.records if job.id in r.getMessage()]
    assert [r.getMessage().split(";")[0] for r in failures] == [
        f"submission message {job.id} failed (delivery {n})" for n in range(deliveries)
    ]
    for failure in failures:
        assert failure.exc_info is not None
        error = failure.exc_info[1]
        assert isinstance(error, TransientError) and "ledger" in str(error), error
    assert letter.message_id == job.id
    assert letter.dead_letter_reason == MAX_DELIVERY_COUNT_EXCEEDED == "MaxDeliveryCountExceeded"
    assert letter.dead_letter_error_description == MAX_DELIVERY_COUNT_DESCRIPTION
    assert letter.dead_letter_source == queue
    assert letter.delivery_count == deliveries  # every delivery failed: none was completed
    assert loop_stack.servicebus.namespace.count(queue) == 0
    assert loop_stack.emulator.job(job.id) is None and bridge.ledger.get_job(job.id) is None
    env = servicebus_env(loop_stack, queue)

    lines = replay_json(settings, env, "--source", "servicebus", "--dry-run")
    assert lines[job.id]["result"] == "would create"
    assert [m.message_id for m in dead_letters(loop_stack, queue)] == [job.id]

    lines = replay_json(settings, env, "--source", "servicebus")
    assert list(lines) == [job.id] and lines[job.id]["result"] == "created"
    assert loop_stack.emulator.job(job.id) is not None
    record = bridge.ledger.get_job(job.id)
    assert record is not None and record.state is JobState.CREATED
    assert dead_letters(loop_stack, queue) == []
    assert loop_stack.servicebus.namespace.count(queue + DEAD_LETTER_SUFFIX) == 0

    assert replay_json(settings, env, "--source", "servicebus") == {}  # nothing left to replay
    puts = [r for r in loop_stack.emulator.requests if r.method == "PUT" and job.id in r.path]
    assert len(puts) == 1


def test_service_bus_dead_letters_unreachable_is_transient() -> None:
    # AMQPS on loopback: nobody listens, so the SDK's real connect attempt is refused.
    from azure.core.credentials import AzureNamedKeyCredential

    from bridge.adapters.dead_letter_queue import ServiceBusDeadLetters
    from bridge.local.process import port_ready

    assert not port_ready(5671)()
    dead = ServiceBusDeadLetters.with_identity(
        "127.0.0.1", "submissions", AzureNamedKeyCredential("key", "value"),  # type: ignore[arg-type]
        retry_total=0,
    )  # fmt: skip
    with pytest.raises(TransientError, match="unavailable: ServiceBusConnectionError"):
        list(dead.items(max_wait_time=1))
    dead.close()
