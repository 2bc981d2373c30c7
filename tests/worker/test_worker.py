"""function_app.py in the real Azure Functions Python worker (`azure-functions-runtime`, run from
`.venv-worker` by tests/worker/driver.py), without the .NET host.

First, the metadata the worker gives the host when it indexes the deployed package, checked against
what infra/ and host.json expect. Then invocations with inputs shaped as the host sends them; the
host acts on the result status: Success completes a Service Bus message (or counts an Event Grid
delivery), Failure abandons it, so Service Bus redelivers it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import secrets
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from bridge import settings as names
from bridge.contracts import Submission
from bridge.ledger import JobState
from bridge.ledger.table import TableLedger
from bridge.local.stack import Stack, StackOptions, running_stack
from bridge.ncrontab import Schedule
from tests.integration.conftest import own_ledger
from tests.unit.test_deployed_package import deployed

REPO = Path(__file__).resolve().parents[2]
WORKER_PYTHON = REPO / ".venv-worker" / "bin" / "python"
DRIVER = Path(__file__).with_name("driver.py")
FUNCTIONS = {"on_submission", "on_azureml_event", "on_key_vault_event", "reconcile", "retain",
             "events_webhook", "health"}  # fmt: skip
# The Bicep the bindings must agree with.
MAIN_BICEP = (REPO / "infra" / "main.bicep").read_text()
FUNCTION_APP_BICEP = (REPO / "infra" / "modules" / "functionapp.bicep").read_text()
SUBSCRIPTION_BICEP = (REPO / "infra" / "modules" / "eventgrid-subscription.bicep").read_text()
HOST_JSON = json.loads((REPO / "host.json").read_text())
APP_SETTINGS = set(re.findall(r"\{\s*name:\s*'([^']+)',\s*value:", FUNCTION_APP_BICEP))


def run_worker(
    app: Path,
    invocations: Sequence[tuple[str, dict[str, Any]]] = (),
    env: Mapping[str, str] | None = None,
    preload: Sequence[str] = (),
) -> dict[str, Any]:
    """One worker process: init (indexing), metadata, loads, then each invocation in order."""
    if not WORKER_PYTHON.exists():
        pytest.fail(f"{WORKER_PYTHON} is missing: `make setup` creates it")
    # The app reads its settings from the environment, as in Azure: none leak from this process.
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIDGE_", "AZURE", "APPLICATIONINSIGHTS_"))
    }
    job = {
        "app": str(app),
        "preload": list(preload),
        "invocations": [{"function": name, "request": request} for name, request in invocations],
    }
    done = subprocess.run(
        [str(WORKER_PYTHON), str(DRIVER)],
        input=json.dumps(job),
        text=True,
        env={**inherited, **(env or {})},
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    answer: dict[str, Any] = json.loads(done.stdout)
    assert answer["init"]["result"]["status"] == "Success", answer["init"]
    assert [load["result"]["status"] for load in answer["loads"]] == ["Success"] * len(FUNCTIONS)
    return answer


# Inputs as the host sends them (protobuf's JSON form of InvocationRequest, .proto field names).


def as_json(value: Any) -> dict[str, str]:
    return {"json": json.dumps(value)}


def host_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def service_bus_message(
    body: str, message_id: str, *, delivery_count: int, properties: dict[str, Any]
) -> dict[str, Any]:
    """One message of a queue trigger, as the Service Bus extension binds it: the body as text
    (the decoder takes text, JSON or bytes alike) and its binding data as trigger metadata,
    strings as strings and all else (ints, times, the property bags) as JSON. `UserProperties`
    must be there: it is what tells the decoder that this is one message, not a batch."""
    now = dt.datetime.now(dt.UTC)
    return {
        "input_data": [{"name": "message", "data": {"string": body}}],
        "trigger_metadata": {
            "MessageId": {"string": message_id},
            "ContentType": {"string": "application/json"},
            "DeliveryCount": as_json(delivery_count),
            "SequenceNumber": as_json(secrets.randbelow(10**6)),
            "EnqueuedTimeUtc": as_json(host_time(now)),
            "ExpiresAtUtc": as_json(host_time(now + dt.timedelta(days=1))),
            "LockToken": {"string": str(uuid.uuid4())},
            "ApplicationProperties": as_json(properties),
            "UserProperties": as_json(properties),
            "sys": as_json(
                {
                    "MethodName": "on_submission",
                    "UtcNow": host_time(now),
                    "RandGuid": str(uuid.uuid4()),
                }
            ),
        },
    }


def event_grid_event(event: dict[str, Any]) -> dict[str, Any]:
    """One Event Grid schema event (the subscription's `eventDeliverySchema`), as JSON."""
    return {"input_data": [{"name": "event", "data": as_json(event)}]}


def timer(*, past_due: bool) -> dict[str, Any]:
    """The host's TimerInfo, as JSON."""
    now = dt.datetime.now(dt.UTC)
    info = {
        "Schedule": {"AdjustForDST": True},
        "IsPastDue": past_due,
        "ScheduleStatus": {
            "Last": host_time(now - dt.timedelta(minutes=10)),
            "Next": host_time(now + dt.timedelta(minutes=5)),
            "LastUpdated": host_time(now - dt.timedelta(minutes=10)),
        },
    }
    return {"input_data": [{"name": "timer", "data": as_json(info)}]}


def http_request(
    method: str, route: str, headers: dict[str, str], body: bytes = b""
) -> dict[str, Any]:
    """An HTTP trigger's request as RpcHttp; the body as raw bytes (the worker's RawHttpBodyBytes
    capability), and no HTTP trigger metadata (RpcHttpTriggerMetadataRemoved)."""
    return {
        "input_data": [
            {
                "name": "req",
                "data": {
                    "http": {
                        "method": method,
                        "url": f"https://bridge.azurewebsites.net/api/{route}",
                        "headers": {"host": "bridge.azurewebsites.net", **headers},
                        "body": {"bytes": base64.b64encode(body).decode()},
                        "query": {},
                        "params": {},
                    }
                },
            }
        ],
    }


def http_answer(response: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    http = response["return_value"]["http"]
    body = base64.b64decode(http["body"].get("bytes", ""))
    return int(http["status_code"]), http["headers"], json.loads(body) if body else None


def submission(run_id: str) -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": "worker", "run_id": run_id, "task_id": "t"},
            "job": {
                "command": "sleep 300",
                "environment": "azureml:e:1",
                "compute": "cpu-cluster",
                "experiment_name": "worker",
            },
            "on": {"completed": ["azureml://bridge-tests/worker/completed"]},
        }
    )


VALIDATION_EVENT = {
    "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
    "topic": "/subscriptions/x",
    "subject": "",
    "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
    "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
    "eventTime": "2026-11-25T10:00:00Z",
    "metadataVersion": "1",
    "dataVersion": "1",
}


# The metadata, and the deployed package with no settings at all.


@pytest.fixture(scope="module")
def unconfigured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The package `.funcignore` leaves, in the worker, with no app setting."""
    package = tmp_path_factory.mktemp("package")
    deployed(package)
    job = submission("unconfigured")
    return run_worker(
        package,
        [
            (
                "on_submission",
                service_bus_message(
                    job.to_json(), job.id, delivery_count=1, properties={"submission_id": job.id}
                ),
            ),
            ("health", http_request("GET", "health", {})),
            (
                "events_webhook",
                http_request(
                    "POST",
                    "events",
                    {
                        "aeg-event-type": "SubscriptionValidation",
                        "content-type": "application/json",
                    },
                    json.dumps([VALIDATION_EVENT]).encode(),
                ),
            ),
            (
                "events_webhook",
                http_request(
                    "OPTIONS", "events", {"WebHook-Request-Origin": "eventgrid.azure.net"}
                ),
            ),
            (
                "on_azureml_event",
                event_grid_event(
                    {
                        **VALIDATION_EVENT,
                        "id": "m1",
                        "subject": "endpoints/aciservice1",
                        "data": {},
                        # v1 web services' event: the bridge routes none of them.
                        "eventType": "Microsoft.MachineLearningServices.ModelDeployed",
                    }
                ),
            ),
        ],
    )


def bindings(answer: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {
        meta["name"]: [json.loads(raw) for raw in meta["raw_bindings"]]
        for meta in answer["metadata"]
    }


def test_the_worker_indexes_the_seven_functions_of_the_deployed_package(
    unconfigured: dict[str, Any],
) -> None:
    found = {meta["name"]: meta for meta in unconfigured["metadata"]}
    assert set(found) == FUNCTIONS
    for meta in found.values():
        assert (meta["script_file"], meta["language"], meta["entry_point"]) == (
            "function_app.py",
            "python",
            meta["name"],
        )
        assert meta["properties"] == {"worker_indexed": "True"}
        # No function-level retry policy: Service Bus's maxDeliveryCount and Event Grid's own
        # retries are the whole retry budget (infra/modules/servicebus.bicep).
        assert "retry_options" not in meta


def test_the_service_bus_trigger_names_the_settings_bicep_sets(
    unconfigured: dict[str, Any],
) -> None:
    [trigger] = bindings(unconfigured)["on_submission"]
    assert trigger == {
        "direction": "IN",
        "type": "serviceBusTrigger",
        "name": "message",
        "queueName": f"%{names.SUBMISSION_QUEUE}%",
        "connection": names.SERVICEBUS_CONNECTION,
    }
    # The host resolves %BRIDGE_SUBMISSION_QUEUE% from app settings, and the connection
    # BRIDGE_SERVICEBUS as an identity-based prefix (BRIDGE_SERVICEBUS__fullyQualifiedNamespace).
    assert names.SUBMISSION_QUEUE in APP_SETTINGS
    assert f"{names.SERVICEBUS_CONNECTION}__fullyQualifiedNamespace" in APP_SETTINGS
    assert f"{names.SERVICEBUS_CONNECTION}__credential" in APP_SETTINGS
    assert names.SERVICEBUS_CONNECTION not in APP_SETTINGS  # no connection string
    assert "submissionQueueName: serviceBus.outputs.queueName" in MAIN_BICEP  # the queue made
    assert "serviceBus" in HOST_JSON["extensions"]  # the trigger's host settings


def test_the_event_grid_trigger_is_the_function_the_subscription_targets(
    unconfigured: dict[str, Any],
) -> None:
    for variable in ("eventFunctionName", "keyVaultFunctionName"):
        target = re.search(rf"var {variable} = '(\w+)'", MAIN_BICEP)
        assert target is not None, variable
        assert bindings(unconfigured)[target.group(1)] == [
            {"direction": "IN", "type": "eventGridTrigger", "name": "event"}
        ]
    assert "endpointType: 'AzureFunction'" in SUBSCRIPTION_BICEP
    # The worker decodes a CloudEvents delivery as a func.CloudEvent, and on_azureml_event reads
    # EventGridEvent's fields (through this worker: AttributeError, event_type): the subscription
    # must keep Event Grid's schema.
    assert "eventDeliverySchema: 'EventGridSchema'" in SUBSCRIPTION_BICEP


def test_the_timers_read_the_schedule_setting_and_a_valid_ncrontab(
    unconfigured: dict[str, Any],
) -> None:
    found = bindings(unconfigured)
    assert found["reconcile"] == [
        {
            "direction": "IN",
            "type": "timerTrigger",
            "name": "timer",
            "schedule": f"%{names.RECONCILE_SCHEDULE}%",
        }
    ]
    assert names.RECONCILE_SCHEDULE in APP_SETTINGS
    default = re.search(r"param reconcileSchedule string = '([^']+)'", MAIN_BICEP)
    assert default is not None
    [retain] = found["retain"]
    assert retain["type"] == "timerTrigger"
    for schedule in (default.group(1), retain["schedule"]):
        Schedule.parse(schedule)  # six fields, as the host's NCRONTAB reads them


def test_the_http_routes_and_their_auth_levels(unconfigured: dict[str, Any]) -> None:
    found = bindings(unconfigured)
    out = {"direction": "OUT", "type": "http", "name": "$return"}
    assert found["events_webhook"] == [
        {
            "direction": "IN",
            "type": "httpTrigger",
            "name": "req",
            "route": "events",
            "methods": ["POST", "OPTIONS"],
            "authLevel": "FUNCTION",
        },
        out,
    ]
    assert found["health"] == [
        {
            "direction": "IN",
            "type": "httpTrigger",
            "name": "req",
            "route": "health",
            "methods": ["GET"],
            "authLevel": "ANONYMOUS",
        },
        out,
    ]
    # Reached at /api/events and /api/health: the anonymous probe route Bicep's comments name.
    assert HOST_JSON["extensions"]["http"]["routePrefix"] == "api"
    assert "/api/health" in FUNCTION_APP_BICEP


def test_unconfigured_submission_is_a_failure_the_host_redelivers(
    unconfigured: dict[str, Any],
) -> None:
    submitted = unconfigured["invocations"][0]
    assert submitted["function"] == "on_submission"
    result = submitted["response"]["result"]
    assert result["status"] == "Failure"  # the message is abandoned, then redelivered
    assert result["exception"]["message"].startswith("ConfigurationError: ")
    assert "BRIDGE_AIRFLOW_URL is not set" in result["exception"]["message"]


def test_unconfigured_health_is_a_503_naming_the_settings(unconfigured: dict[str, Any]) -> None:
    health = unconfigured["invocations"][1]["response"]
    assert health["result"]["status"] == "Success"
    status, headers, body = http_answer(health)
    assert status == 503 and headers["content-type"] == "application/json"
    assert body["status"] == "misconfigured"
    assert "BRIDGE_SIGNING_KEY is not set" in body["problems"]


def test_the_webhook_handshakes_need_no_backend(unconfigured: dict[str, Any]) -> None:
    validation, options = unconfigured["invocations"][2:4]
    assert http_answer(validation["response"])[::2] == (
        200,
        {"validationResponse": VALIDATION_EVENT["data"]["validationCode"]},
    )
    status, headers, _ = http_answer(options["response"])
    assert status == 200 and headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


def test_an_event_the_bridge_does_not_route_succeeds_with_no_backend(
    unconfigured: dict[str, Any],
) -> None:
    ignored = unconfigured["invocations"][4]
    assert ignored["function"] == "on_azureml_event"
    assert ignored["response"]["result"]["status"] == "Success", ignored["response"]["result"]


# Against the local stack: Azurite (the ledger) and the Azure ML emulator, no Airflow.


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    options = StackOptions(workdir=tmp_path_factory.mktemp("worker-stack"), airflow=False)
    with running_stack(options) as running:
        yield running


@pytest.fixture(scope="module")
def configured(stack: Stack) -> Iterator[tuple[dict[str, Any], TableLedger, dict[str, Any]]]:
    """One worker, as one instance of the Function App: submissions, events and both timers."""
    settings = own_ledger(stack, "worker")  # a table of its own; no sweep of its jobs for an hour
    job = submission(secrets.token_hex(6))
    trace = secrets.token_hex(16)
    properties = {
        "schema": "bridge.submission/v1",
        "submission_id": job.id,
        "traceparent": f"00-{trace}-{secrets.token_hex(8)}-01",
    }
    broken_event = {
        **VALIDATION_EVENT,
        "id": f"broken-{secrets.token_hex(4)}",
        "eventType": "Microsoft.MachineLearningServices.RunStatusChanged",
        "data": {"runStatus": "Completed"},
    }
    answer = run_worker(
        REPO,
        [
            (
                "on_submission",
                service_bus_message(job.to_json(), job.id, delivery_count=1, properties=properties),
            ),
            (
                "on_submission",
                service_bus_message(job.to_json(), job.id, delivery_count=2, properties=properties),
            ),
            (
                "on_submission",
                service_bus_message(
                    "not json", "malformed-" + job.id, delivery_count=1, properties={}
                ),
            ),
            ("on_azureml_event", event_grid_event(broken_event)),
            ("reconcile", timer(past_due=True)),
            ("retain", timer(past_due=False)),
        ],
        env=settings.environment(),
        # What `bridge dev` registers: the credential for the emulator on loopback. The deployed
        # package has no bridge.local; in Azure the identity is the managed identity.
        preload=["bridge.local.credential"],
    )
    assert settings.ledger_connection_string is not None
    ledger = TableLedger.from_connection_string(
        settings.ledger_connection_string, settings.ledger_table
    )
    yield answer, ledger, {"job": job, "trace": trace, "event": broken_event["id"]}
    ledger.close()


@pytest.mark.integration
def test_each_invocation_succeeds_against_the_stack(
    configured: tuple[dict[str, Any], TableLedger, dict[str, Any]],
) -> None:
    answer, _, _ = configured
    results = [(i["function"], i["response"]["result"]) for i in answer["invocations"]]
    assert [(name, result["status"]) for name, result in results] == [
        ("on_submission", "Success"),
        ("on_submission", "Success"),
        ("on_submission", "Success"),
        ("on_azureml_event", "Success"),
        ("reconcile", "Success"),
        ("retain", "Success"),
    ], results


@pytest.mark.integration
def test_a_submission_creates_one_job_and_its_redelivery_nothing(
    stack: Stack, configured: tuple[dict[str, Any], TableLedger, dict[str, Any]]
) -> None:
    _, ledger, made = configured
    job = made["job"]
    assert stack.emulator.job(job.id) is not None
    puts = [r for r in stack.emulator.requests if r.method == "PUT" and job.id in r.path]
    assert len(puts) == 1, puts  # DeliveryCount 2 found the job recorded: no second create
    record = ledger.get_job(job.id)
    assert record is not None and record.state is JobState.CREATED
    # The traceparent application property, decoded from the host's JSON, continued the trace.
    assert record.traceparent is not None and made["trace"] in record.traceparent


@pytest.mark.integration
def test_malformed_messages_and_events_are_recorded_as_rejected(
    configured: tuple[dict[str, Any], TableLedger, dict[str, Any]],
) -> None:
    _, ledger, made = configured
    rejected = {row["message_id"]: row["reason"] for row in ledger.rejected_messages()}
    assert set(rejected) == {"malformed-" + made["job"].id, "event:" + made["event"]}
    assert "data.runId is missing" in rejected["event:" + made["event"]]


@pytest.mark.integration
def test_the_function_logs_reach_the_worker_with_each_outcome(
    configured: tuple[dict[str, Any], TableLedger, dict[str, Any]],
) -> None:
    answer, _, made = configured
    job = made["job"].id
    logs = [
        [r["message"] for r in i["logs"] if r["logger"] == "bridge.functions"]
        for i in answer["invocations"]
    ]
    assert logs[0][0].startswith(f"submission {job}: created https://ml.azure.com/runs/{job}?")
    assert logs[1] == [f"submission {job}: duplicate created"]
    assert logs[2][0].startswith(f"submission malformed-{job}: rejected submission is not JSON")
    assert logs[4] == ["reconcile timer is past due; sweeping now"]
    # The worker logs at INFO and the host forwards it: the Azure SDKs' request-by-request INFO
    # lines (every ledger and Azure ML call) must not ride along; their warnings still would.
    sdk = [
        r["logger"]
        for i in answer["invocations"]
        for r in i["logs"]
        if r["logger"].startswith(("azure.core", "azure.identity")) and r["level"] == "INFO"
    ]
    assert sdk == []
