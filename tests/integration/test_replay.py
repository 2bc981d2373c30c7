"""`bridge replay` against the local stack: what Event Grid dead-lettered and what the submission
queue gave up on goes through the same path as live traffic, once; a second replay changes nothing.

The dead-letter blobs are written by the local Event Grid exactly as Event Grid writes them. Each
test has a ledger table of its own, so the dev host's reconcile timer never routes its jobs.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from bridge.adapters.dead_letters import DeadLetterBlobs
from bridge.composition import build
from bridge.contracts import TAG_SIGNATURE, Submission
from bridge.events import RUN_COMPLETED
from bridge.local.dead_letter import CONTAINER, DeadLetterContainer
from bridge.local.event_grid import EventGridTopic
from bridge.local.process import free_port
from bridge.local.stack import Stack
from bridge.provider.senders import QueueEnvelope
from bridge.replay import Replayer
from bridge.service import Bridge, Result
from bridge.settings import Settings
from tests.integration.conftest import job_events, job_tags, own_ledger, run_bridge

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


def bridge_cli(stack: Stack, settings: Settings, *args: str) -> tuple[int, str]:
    done = run_bridge(settings, *args, env=stack.queue_env)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, done.stdout


def test_bridge_replay_reads_the_stacks_dead_letters_and_poison_queue(
    loop_stack: Stack, bridge: Bridge, settings: Settings
) -> None:
    finished = completed_job(loop_stack, bridge)
    event = run_completed(loop_stack, finished)
    dead_letter(loop_stack, event)  # the stack's own container, as Event Grid's in Azure
    waiting = submission()  # a submission the queue gave up on
    poison = QueueClient.from_connection_string(
        loop_stack.azurite.connection_string, f"{loop_stack.queue_name}-poison"
    )
    poison.send_message(QueueEnvelope.for_submission(waiting).encode())

    code, out = bridge_cli(loop_stack, settings, "replay", "--dry-run", "--json")
    assert code == 0
    lines = {line["subject"]: line for line in json.loads(out)}
    assert lines[event["id"]]["result"] == "would route"
    assert lines[waiting.id]["result"] == "would create"
    assert loop_stack.emulator.job(waiting.id) is None

    code, out = bridge_cli(loop_stack, settings, "replay", "--json")
    assert code == 0
    lines = {line["subject"]: line for line in json.loads(out)}
    assert (lines[event["id"]]["result"], lines[waiting.id]["result"]) == ("handled", "created")
    assert loop_stack.emulator.job(waiting.id) is not None
    assert len(job_events(loop_stack, DONE, finished.id)) == 1

    code, out = bridge_cli(loop_stack, settings, "replay", "--source", "dead-letters",
                           "--source", "poison")  # fmt: skip
    assert code == 0 and waiting.id not in out  # the replayed message left the poison queue
    assert "duplicate" in out.split(event["id"])[1].splitlines()[0]
    assert len(job_events(loop_stack, DONE, finished.id)) == 1


def test_service_bus_dead_letters_unreachable_is_transient() -> None:
    # AMQPS on loopback: nobody listens, so the SDK's real connect attempt is refused.
    from azure.core.credentials import AzureNamedKeyCredential

    from bridge.adapters.dead_letter_queue import ServiceBusDeadLetters
    from bridge.errors import TransientError
    from bridge.local.process import port_ready

    assert not port_ready(5671)()
    dead = ServiceBusDeadLetters(
        "127.0.0.1", "submissions", AzureNamedKeyCredential("key", "value"),  # type: ignore[arg-type]
        retry_total=0,
    )  # fmt: skip
    with pytest.raises(TransientError, match="unavailable: ServiceBusConnectionError"):
        list(dead.items(max_wait_time=1))
    dead.close()
