"""The whole loop on the real local stack: Airflow 3, Azurite, the Azure ML emulator, dev host."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage

from bridge.contracts import Submission
from bridge.ledger import JobState
from bridge.local import demo
from bridge.local.stack import Stack
from bridge.signing import Keyring, key_id
from tests.integration.conftest import asset_events, eventually, job_tags, send

pytestmark = pytest.mark.integration

DONE = "azureml://bridge-tests/loop/completed"
FAILED = "azureml://bridge-tests/loop/failed"
TOPIC = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/bridge-local/providers/"
    "Microsoft.MachineLearningServices/workspaces/local-workspace"
)


def submission(*, command: str = "sleep 300", compute: str = "cpu-cluster") -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": "loop_tests", "run_id": secrets.token_hex(6), "task_id": "submit"},
            "job": {
                "command": command,
                "environment": "azureml:loop-env:1",
                "compute": compute,
                "experiment_name": "loop",
            },
            "on": {"completed": [DONE], "failed": [FAILED]},
            "trigger": {"completed": [{"dag_id": "loop_triggered", "conf": {"from": "test"}}]},
        }
    )


def created(stack: Stack, job: Submission) -> None:
    eventually(lambda: stack.emulator.job(job.id), what=f"job {job.id} created in the emulator")


def post(stack: Stack, events: list[dict[str, Any]], content_type: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        stack.devhost.webhook_url,
        data=json.dumps(events).encode(),
        headers={
            "Content-Type": content_type,
            "aeg-event-type": "Notification",
            "aeg-sas-key": stack.devhost.event_key or "",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def documented_event(
    job_name: str, event_type: str, status: str | None, tags: dict[str, str] | None = None
) -> dict[str, Any]:
    """Shaped like Azure's documentation sample (shared/REFERENCE.md), for our job."""
    data: dict[str, Any] = {
        "experimentId": "0fa9dfaa-cba3-4fa7-b590-23e48548f5c1",
        "experimentName": "loop",
        "runId": job_name,
        "runType": None,
        "runTags": tags or {},
        "runProperties": {},
    }
    if status is not None:
        data["runStatus"] = status
    return {
        "id": secrets.token_hex(8),
        "topic": TOPIC,
        "subject": f"experiments/0fa9dfaa-cba3-4fa7-b590-23e48548f5c1/runs/{job_name}",
        "eventType": f"Microsoft.MachineLearningServices.{event_type}",
        "eventTime": "2017-06-26T18:41:00.9584103Z",
        "data": data,
        "dataVersion": "",
        "metadataVersion": "1",
    }


def as_cloud_event(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event["id"],
        "source": event["topic"],
        "subject": event["subject"],
        "type": event["eventType"],
        "time": event["eventTime"],
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "data": event["data"],
    }


def events_of(stack: Stack, uri: str, job_name: str) -> list[Any]:
    return [e for e in asset_events(stack, uri) if e.extra.get("job_name") == job_name]


def test_demo_runs_the_whole_loop(loop_stack: Stack) -> None:
    steps, logged, _ = demo.follow_one_job(loop_stack, timeout=120)
    names = [step.what for step in steps]
    assert any("created" in n for n in names) and any("job completed" in n for n in names)
    assert any("asset event posted on azureml://bridge-demo/train/completed" in n for n in names)
    assert names[-1].startswith("consumer DAG azureml_model_ready succeeded")
    assert "Azure ML job" in logged and "Completed" in logged


def test_azure_ml_received_what_azure_ai_ml_really_sends(loop_stack: Stack) -> None:
    job = submission()
    send(loop_stack, job)
    created(loop_stack, job)
    puts = [r for r in loop_stack.emulator.requests if r.method == "PUT" and job.id in r.path]
    # One PUT as a rule. On a loaded machine the first submission of a session (which imports
    # azure-ai-ml) was seen to outlast the queue's visibility timeout: the redelivered message
    # sends the same PUT again, which Azure ML answers as an update of the same job.
    assert puts and all(put.body == puts[0].body for put in puts[1:]), puts
    assert puts[0].path.endswith(f"/workspaces/local-workspace/jobs/{job.id}") and puts[
        0
    ].path.startswith("/subscriptions/00000000-0000-0000-0000-000000000000/")
    properties = puts[0].body["properties"]
    assert properties["jobType"] == "Command"
    assert properties["command"] == "sleep 300"
    assert properties["experimentName"] == "loop"
    assert properties["computeId"].endswith("/computes/cpu-cluster")
    assert "loop-env" in properties["environmentId"]
    tags = properties["tags"]
    assert tags["bridge_submission"] == job.id and tags["bridge_dag_id"] == "loop_tests"
    kid, mac = tags["bridge_signature"].split(":")
    assert kid == key_id(loop_stack.bridge.keys.current) and len(mac) == 64
    # The ledger learns of the job once Azure ML's answer is back, a moment after the PUT arrived.
    ledger = loop_stack.bridge.ledger
    record = eventually(
        lambda: (r := ledger.get_job(job.id)) and r.state is JobState.CREATED and r,
        what=f"job {job.id} recorded as created",
    )
    assert record.studio_url


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_documented_events_in_a_batch_produce_exactly_the_routed_effects(
    loop_stack: Stack, schema: str
) -> None:
    job = submission()
    send(loop_stack, job)
    created(loop_stack, job)
    tags = job_tags(loop_stack, job.id)
    batch = [
        documented_event(job.id, "RunStatusChanged", "Running", tags),
        documented_event(job.id, "RunStatusChanged", "completed", tags),
        documented_event(job.id, "RunCompleted", None, tags),
    ]
    content_type = "application/json"
    if schema == "cloudevents":
        batch = [as_cloud_event(event) for event in batch]
        content_type = "application/cloudevents-batch+json"
    for _ in range(2):  # Event Grid delivers at least once
        status, body = post(loop_stack, batch, content_type)
        assert status == 200, body
    [event] = events_of(loop_stack, DONE, job.id)
    assert event.extra["status"] == "Completed"
    assert event.extra["submission_id"] == job.id
    assert event.extra["origin"]["dag_id"] == "loop_tests"
    assert event.extra["workspace"] == "local-workspace"
    assert events_of(loop_stack, FAILED, job.id) == []
    assert loop_stack.airflow is not None
    runs = [r for r in loop_stack.airflow.runs("loop_triggered") if job.id in r.dag_run_id]
    assert [r.dag_run_id for r in runs] == [f"azureml__{job.id}__completed"]
    assert runs[0].conf["from"] == "test" and runs[0].conf["azureml"]["job_name"] == job.id


def test_failed_job_reaches_the_failure_asset(loop_stack: Stack) -> None:
    job = submission(command="echo 'bad data' >&2; exit 3")
    send(loop_stack, job)
    [event] = eventually(lambda: events_of(loop_stack, FAILED, job.id), timeout=60,
                         what="failure asset event")  # fmt: skip
    assert event.extra["status"] == "Failed"
    assert events_of(loop_stack, DONE, job.id) == []
    record = loop_stack.bridge.ledger.get_job(job.id)
    assert record is not None and record.state is JobState.FAILED


def test_example_failure_dag_runs_on_a_failed_job(loop_stack: Stack) -> None:
    airflow = loop_stack.airflow
    assert airflow is not None
    before = {r.dag_run_id for r in airflow.runs("azureml_training_failed")}
    run_id = airflow.trigger("azureml_train_fails")
    assert airflow.wait_for_run("azureml_train_fails", run_id, timeout=60) == "success"
    consumer = eventually(
        lambda: next((r for r in airflow.runs("azureml_training_failed")
                      if r.dag_run_id not in before), None),
        timeout=90, what="azureml_training_failed run",
    )  # fmt: skip
    assert airflow.wait_for_run("azureml_training_failed", consumer.dag_run_id, 60) == "success"


def test_policy_violation_is_told_on_the_failure_route_and_creates_no_job(
    loop_stack: Stack,
) -> None:
    job = submission(compute="gpu-monster")
    send(loop_stack, job)
    [event] = eventually(lambda: events_of(loop_stack, FAILED, job.id), what="rejection event")
    assert event.extra["status"] == "Rejected"
    assert "compute 'gpu-monster' is not allowed" in event.extra["reason"]
    assert loop_stack.emulator.job(job.id) is None
    record = loop_stack.bridge.ledger.get_job(job.id)
    assert record is not None and record.state is JobState.REJECTED


def test_resent_submission_creates_one_job(loop_stack: Stack) -> None:
    job = submission()
    send(loop_stack, job)
    send(loop_stack, job)
    created(loop_stack, job)
    with (
        ServiceBusClient.from_connection_string(loop_stack.servicebus.connection_string) as client,
        client.get_queue_receiver(loop_stack.queue_name) as receiver,
    ):  # peeking locks nothing: the dev host's trigger still has the queue to itself
        eventually(lambda: receiver.peek_messages(max_message_count=10, sequence_number=1) == []
                   or None, what="queue drained")  # fmt: skip
    puts = [r for r in loop_stack.emulator.requests if r.method == "PUT" and job.id in r.path]
    # One PUT as a rule: the queue's duplicate detection (as infra/ sets it) drops the resend,
    # and the trigger renews the lock of a slow first submission (a session's first imports
    # azure-ai-ml). Were the message delivered again all the same, it would send the same PUT,
    # which Azure ML answers as an update of the same job.
    assert puts and all(put.body == puts[0].body for put in puts[1:]), puts


def test_a_message_that_is_no_submission_is_recorded_as_rejected(loop_stack: Stack) -> None:
    marker = secrets.token_hex(4)
    with (
        ServiceBusClient.from_connection_string(loop_stack.servicebus.connection_string) as client,
        client.get_queue_sender(loop_stack.queue_name) as sender,
    ):
        sender.send_messages(ServiceBusMessage(f"not a submission {marker}"))
    ledger = loop_stack.bridge.ledger
    rows = eventually(
        lambda: [r for r in ledger.rejected_messages() if marker.encode() in r["body"]],
        what="rejected message recorded",
    )
    assert "not JSON" in rows[0]["reason"]


def test_event_for_a_job_the_bridge_did_not_submit_changes_nothing(loop_stack: Stack) -> None:
    status, body = post(
        loop_stack, [documented_event("someone-elses-job", "RunCompleted", None)],
        "application/json",
    )  # fmt: skip
    assert status == 200
    assert body["results"][0]["result"] == "ignored"
    assert body["results"][0]["detail"] == "not submitted by the bridge"


def test_an_unreadable_event_beside_a_run_event_costs_the_run_event_nothing(
    loop_stack: Stack,
) -> None:
    job = submission()
    send(loop_stack, job)
    tags = job_tags(loop_stack, job.id)
    unreadable = {**documented_event(job.id, "RunStatusChanged", "Failed", tags),
                  "eventTime": 1498502460}  # fmt: skip
    valid = documented_event(job.id, "RunStatusChanged", "Failed", tags)

    status, body = post(loop_stack, [unreadable, valid], "application/json")

    assert status == 200, body  # a 400 would make Event Grid drop the valid event too
    results = {r["id"]: r["result"] for r in body["results"]}
    assert results == {unreadable["id"]: "rejected", valid["id"]: "handled"}
    [event] = events_of(loop_stack, FAILED, job.id)
    assert event.extra["status"] == "Failed" and event.extra["event_id"] == valid["id"]
    [recorded] = [r for r in loop_stack.bridge.ledger.rejected_messages()
                  if r["message_id"] == f"event:{unreadable['id']}"]  # fmt: skip
    assert "'eventTime' must be a string" in recorded["reason"]
    assert json.loads(recorded["body"])["eventTime"] == 1498502460


def test_event_without_the_bridge_signature_is_ignored_and_left_to_reconciliation(
    loop_stack: Stack,
) -> None:
    job = submission()
    send(loop_stack, job)
    created(loop_stack, job)
    forged = documented_event(job.id, "RunStatusChanged", "Failed", {"bridge_signature": "0" * 64})
    unsigned = documented_event(job.id, "RunStatusChanged", "Failed", {})
    status, body = post(loop_stack, [forged, unsigned], "application/json")
    assert status == 200
    details = [r["detail"] for r in body["results"]]
    assert details[0].startswith("signature does not verify with key ")
    assert details[1] == "event carries no signature tag"
    assert events_of(loop_stack, FAILED, job.id) == []


def test_dev_host_refuses_oversized_and_non_json_deliveries_as_the_function_does(
    loop_stack: Stack,
) -> None:
    def refused(body: bytes, content_type: str) -> tuple[int, str]:
        request = urllib.request.Request(
            loop_stack.devhost.webhook_url, data=body, method="POST",
            headers={"Content-Type": content_type, "aeg-event-type": "Notification",
                     "aeg-sas-key": loop_stack.devhost.event_key or ""},
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=30)
        return raised.value.code, json.loads(raised.value.read())["error"]

    status, error = refused(b"[" + b" " * (2 * 1024 * 1024) + b"]", "application/json")
    assert (status, error) == (413, "body of 2097154 bytes is over the 1048576 allowed")
    status, error = refused(b"[{}]", "text/plain")
    assert status == 415 and "content type 'text/plain'" in error


def test_signing_key_rotated_while_a_job_runs_breaks_nothing(loop_stack: Stack) -> None:
    before = loop_stack.bridge.keys
    job = submission(command="sleep 4")
    send(loop_stack, job)
    created(loop_stack, job)
    signed_before = job_tags(loop_stack, job.id)["bridge_signature"]
    # Rotation as docs/security.md has it: the old key becomes the previous one.
    loop_stack.bridge.keys = Keyring(secrets.token_hex(32), previous=before.current)
    try:
        after = submission(command="true")
        send(loop_stack, after)
        created(loop_stack, after)
        eventually(lambda: events_of(loop_stack, DONE, job.id), timeout=60,
                   what="the job signed before the rotation routed after it")  # fmt: skip
        eventually(lambda: events_of(loop_stack, DONE, after.id), timeout=60,
                   what="a job signed after the rotation routed")  # fmt: skip
    finally:
        loop_stack.bridge.keys = before
    signed_after = job_tags(loop_stack, after.id)["bridge_signature"]
    assert signed_before.split(":")[0] == key_id(before.current)
    assert signed_after.split(":")[0] != key_id(before.current)
    [routed] = events_of(loop_stack, DONE, job.id)
    assert routed.extra["via"] == "event"  # the event verified; reconciliation had no part
