"""function_app.py's functions, called with azure.functions objects, against the local stack.

The Functions host cannot be installed here; this is what it would do: build the binding's object
and call the function. The app reads its settings from the environment, as in Azure.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Iterator

import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessage

import function_app
from bridge.composition import runtime
from bridge.contracts import Submission
from bridge.ledger import JobState
from bridge.local.stack import Stack
from tests.integration.conftest import asset_events, eventually, job_tags

pytestmark = pytest.mark.integration

DONE = "azureml://bridge-tests/loop/completed"
FAILED = "azureml://bridge-tests/loop/failed"


@pytest.fixture
def app_environment(loop_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    for name, value in loop_stack.settings.environment().items():
        monkeypatch.setenv(name, value)
    runtime.cache_clear()
    yield loop_stack
    runtime.cache_clear()


def long_job() -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": "functions", "run_id": secrets.token_hex(6), "task_id": "t"},
            "job": {"command": "sleep 300", "environment": "azureml:e:1", "compute": "cpu-cluster",
                    "experiment_name": "functions"},
            "on": {"completed": [DONE], "failed": [FAILED]},
        }
    )  # fmt: skip


def service_bus_message(job: Submission, *, delivery_count: int = 1) -> ServiceBusMessage:
    return ServiceBusMessage(
        body=job.to_json().encode(),
        message_id=job.id,
        content_type="application/json",
        delivery_count=delivery_count,
        application_properties={"schema": "bridge.submission/v1", "submission_id": job.id},
        user_properties={},
    )


def event_grid_event(
    stack: Stack, job: Submission, event_type: str, status: str | None
) -> func.EventGridEvent:
    tags = job_tags(stack, job.id)
    data: dict[str, object] = {"experimentName": "functions", "runId": job.id, "runTags": tags}
    if status:
        data["runStatus"] = status
    return func.EventGridEvent(
        id=secrets.token_hex(8),
        data=data,
        topic="/subscriptions/s/resourceGroups/r/providers/"
        "Microsoft.MachineLearningServices/workspaces/local-workspace",
        subject=f"experiments/e/runs/{job.id}",
        event_type=f"Microsoft.MachineLearningServices.{event_type}",
        event_time=dt.datetime.now(dt.UTC),
        data_version="",
    )


def test_on_submission_creates_the_job_and_a_redelivery_creates_nothing(
    app_environment: Stack,
) -> None:
    job = long_job()
    function_app.on_submission(service_bus_message(job))
    function_app.on_submission(service_bus_message(job, delivery_count=2))
    assert app_environment.emulator.job(job.id) is not None
    puts = [r for r in app_environment.emulator.requests if r.method == "PUT" and job.id in r.path]
    # The redelivery sends nothing. A second PUT can come only from the test stack's sweep (2 s
    # grace) resuming the job while this process's first create still imports azure-ai-ml; it is
    # the same PUT, which Azure ML answers as an update of the one job.
    assert puts and all(put.body == puts[0].body for put in puts[1:]), puts
    assert len({put.body["properties"]["displayName"] for put in puts}) == 1


def test_on_azureml_event_posts_the_routed_asset_event_once(app_environment: Stack) -> None:
    job = long_job()
    function_app.on_submission(service_bus_message(job))
    stack = app_environment
    function_app.on_azureml_event(event_grid_event(stack, job, "RunStatusChanged", "Running"))
    function_app.on_azureml_event(event_grid_event(stack, job, "RunStatusChanged", "COMPLETED"))
    function_app.on_azureml_event(event_grid_event(stack, job, "RunCompleted", None))
    events = [e for e in asset_events(app_environment, DONE) if e.extra["job_name"] == job.id]
    assert len(events) == 1 and events[0].extra["status"] == "Completed"
    record = app_environment.bridge.ledger.get_job(job.id)
    assert record is not None and record.state is JobState.COMPLETED


def test_malformed_event_grid_event_is_recorded_not_retried(app_environment: Stack) -> None:
    job = long_job()
    broken = func.EventGridEvent(
        id=f"broken-{secrets.token_hex(4)}", data={"runStatus": "Completed"}, topic="t",
        subject="s", event_type="Microsoft.MachineLearningServices.RunStatusChanged",
        event_time=None, data_version="",
    )  # fmt: skip
    function_app.on_azureml_event(broken)  # returns: Event Grid must not retry it for 24 h
    rows = eventually(
        lambda: [r for r in runtime().ledger.rejected_messages()
                 if r["message_id"] == f"event:{broken.id}"],
        what="rejected event recorded",
    )  # fmt: skip
    assert "data.runId is missing" in rows[0]["reason"]
    assert job.id not in json.dumps(rows[0]["reason"])


def test_events_webhook_handles_a_delivery_through_the_http_trigger(app_environment: Stack) -> None:
    job = long_job()
    function_app.on_submission(service_bus_message(job))
    tags = job_tags(app_environment, job.id)
    body = [{
        "id": secrets.token_hex(8), "topic": "/subscriptions/s/workspaces/local-workspace",
        "subject": f"experiments/e/runs/{job.id}", "dataVersion": "", "metadataVersion": "1",
        "eventType": "Microsoft.MachineLearningServices.RunStatusChanged",
        "eventTime": "2026-11-25T10:00:00Z",
        "data": {"runId": job.id, "runStatus": "failed", "runTags": tags},
    }]  # fmt: skip
    request = func.HttpRequest(
        "POST", "http://localhost/api/events", headers={"aeg-event-type": "Notification"},
        body=json.dumps(body).encode(),
    )  # fmt: skip
    response = function_app.events_webhook(request)
    assert response.status_code == 200, response.get_body()
    events = [e for e in asset_events(app_environment, FAILED) if e.extra["job_name"] == job.id]
    assert [e.extra["status"] for e in events] == ["Failed"]


def test_health_is_ok_when_configured(app_environment: Stack) -> None:
    response = function_app.health(func.HttpRequest("GET", "http://localhost/api/health", body=b""))
    assert response.status_code == 200
    body = json.loads(response.get_body())
    assert (body["status"], body["problems"]) == ("ok", [])
    assert body["blocked"] == {"jobs": 0, "causes": {}}  # read from the app's own ledger
