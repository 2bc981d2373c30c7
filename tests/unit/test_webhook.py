"""The webhook answers handshakes and refuses malformed input with no backend configured at all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import azure.functions as func
import pytest

from bridge import functions
from bridge.composition import build
from bridge.service import Bridge
from bridge.settings import Settings
from bridge.webhook import answer

REPO = Path(__file__).parents[2]
VALIDATION = [
    {
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
        "topic": "/subscriptions/x",
        "subject": "",
        "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2026-11-25T10:00:00Z",
        "metadataVersion": "1",
        "dataVersion": "1",
    }
]


def unconfigured() -> Bridge:
    return build(Settings())  # raises ConfigurationError: nothing is configured


def test_event_grid_subscription_validation_echoes_the_code() -> None:
    reply = answer(
        "POST", {"aeg-event-type": "SubscriptionValidation"}, json.dumps(VALIDATION).encode(),
        unconfigured,
    )  # fmt: skip
    assert reply.status == 200
    assert reply.body == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}


def test_cloudevents_options_handshake_allows_the_origin() -> None:
    reply = answer("OPTIONS", {"WebHook-Request-Origin": "eventgrid.azure.net"}, b"", unconfigured)
    assert reply.status == 200
    assert reply.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


def test_options_without_origin_is_a_named_400() -> None:
    reply = answer("OPTIONS", {}, b"", unconfigured)
    assert reply.status == 400 and "WebHook-Request-Origin" in str(reply.body)


@pytest.mark.parametrize(
    ("body", "named"),
    [(b"nope", "body is not JSON"), (b"[]", "empty array"), (b"[1]", "no JSON object")],
)
def test_malformed_body_is_a_json_400_naming_the_problem(body: bytes, named: str) -> None:
    reply = answer("POST", {}, body, unconfigured)
    assert reply.status == 400
    assert named in json.loads(reply.content())["error"]


def test_events_the_bridge_does_not_route_are_answered_without_a_backend() -> None:
    event = {**VALIDATION[0], "eventType": "Microsoft.MachineLearningServices.ModelDeployed"}
    reply = answer("POST", {}, json.dumps([event]).encode(), unconfigured)
    assert reply.status == 200
    assert reply.body == {
        "results": [
            {"id": event["id"], "result": "ignored", "detail": "not an Azure ML run event"},
        ]
    }


def test_a_model_registered_with_no_configuration_is_a_500_naming_the_settings() -> None:
    """Routed to the model's asset now: it needs the bridge, and Event Grid retries meanwhile."""
    registered = {
        **VALIDATION[0], "id": "registered-1", "subject": "models/churn:3",
        "eventType": "Microsoft.MachineLearningServices.ModelRegistered", "data": {},
    }  # fmt: skip
    reply = answer("POST", {}, json.dumps([registered]).encode(), unconfigured)
    assert reply.status == 500
    assert "BRIDGE_AIRFLOW_URL is not set" in json.loads(reply.content())["error"]


def test_run_event_with_no_configuration_is_a_500_naming_the_settings() -> None:
    event = {
        **VALIDATION[0],
        "eventType": "Microsoft.MachineLearningServices.RunCompleted",
        "data": {"runId": "job-1", "runTags": {}},
    }
    reply = answer("POST", {}, json.dumps([event]).encode(), unconfigured)
    assert reply.status == 500  # Event Grid retries: the settings may be fixed meanwhile
    assert "BRIDGE_AIRFLOW_URL is not set" in json.loads(reply.content())["error"]


def test_body_over_one_mebibyte_is_a_413_before_it_is_parsed() -> None:
    too_big = b"[" + b" " * (1024 * 1024) + b"]"  # not even JSON: the size is judged first

    reply = answer("POST", {"Content-Type": "application/json"}, too_big, unconfigured)

    assert reply.status == 413
    assert json.loads(reply.content())["error"] == (
        f"body of {len(too_big)} bytes is over the 1048576 allowed"
    )


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/CloudEvents+JSON",
     "application/cloudevents-batch+json; charset=utf-8"],
)  # fmt: skip
def test_json_and_cloudevents_content_types_are_read(content_type: str) -> None:
    reply = answer("POST", {"content-type": content_type}, json.dumps(VALIDATION).encode(),
                   unconfigured)  # fmt: skip
    assert reply.status == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data"])
def test_other_content_types_are_a_415_naming_the_type(content_type: str) -> None:
    reply = answer("POST", {"Content-Type": content_type}, json.dumps(VALIDATION).encode(),
                   unconfigured)  # fmt: skip
    assert reply.status == 415
    assert f"content type {content_type!r} is not one of" in json.loads(reply.content())["error"]


def test_other_methods_are_refused() -> None:
    assert answer("GET", {}, b"", unconfigured).status == 405


def test_function_webhook_speaks_azure_functions_http() -> None:
    request = func.HttpRequest(
        "POST", "http://localhost/api/events",
        headers={"aeg-event-type": "SubscriptionValidation"},
        body=json.dumps(VALIDATION).encode(),
    )  # fmt: skip
    response = functions.events_webhook(request)
    assert response.status_code == 200
    assert json.loads(response.get_body()) == {
        "validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    }


def test_health_names_missing_settings_and_leaks_no_value(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BRIDGE_AIRFLOW_URL", "BRIDGE_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BRIDGE_AIRFLOW_PASSWORD", "hunter2-very-secret")
    monkeypatch.setenv("BRIDGE_POLICY", "{broken")
    response = functions.health(func.HttpRequest("GET", "http://localhost/api/health", body=b""))
    body = json.loads(response.get_body())
    assert response.status_code == 503
    assert "BRIDGE_AIRFLOW_URL is not set" in body["problems"]
    assert any("BRIDGE_POLICY is not valid JSON" in p for p in body["problems"])
    assert "hunter2" not in response.get_body().decode()


def test_importing_function_app_does_not_import_azure_ai_ml() -> None:
    code = "import sys, function_app; print('azure.ai.ml' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_only_health_answers_without_a_function_key() -> None:
    code = (
        "import json, function_app\n"
        "fs = function_app.app.get_functions()\n"
        "print(json.dumps({f.get_function_name(): str(f.get_bindings()[0].auth_level)\n"
        "                  for f in fs if f.get_bindings()[0].type == 'httpTrigger'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == {"events_webhook": "FUNCTION", "health": "ANONYMOUS"}


def test_function_app_lists_its_seven_functions() -> None:
    code = (
        "import json, function_app\n"
        "fs = function_app.app.get_functions()\n"
        "print(json.dumps(sorted((f.get_function_name(), f.get_bindings()[0].type) for f in fs)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == [
        ["events_webhook", "httpTrigger"],
        ["health", "httpTrigger"],
        ["on_azureml_event", "eventGridTrigger"],
        ["on_key_vault_event", "eventGridTrigger"],
        ["on_submission", "serviceBusTrigger"],
        ["reconcile", "timerTrigger"],
        ["retain", "timerTrigger"],
    ]
