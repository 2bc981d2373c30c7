"""ARM resource write events (the resource group's system topic) read from the public REST-spec
payloads of tests/fixtures/lifecycle (sources in its SOURCES), in both schemas: an online endpoint
or deployment becomes a `ResourceWriteEvent`, anything else of the group is ignored, never refused.

The public examples are all of a storage account; pointed at an Azure ML deployment they are
changed only in the fields that name the resource."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bridge.contracts import Outcome
from bridge.events import (
    NOT_AN_ONLINE_TARGET,
    RESOURCE_WRITE_CANCEL,
    RESOURCE_WRITE_FAILURE,
    RESOURCE_WRITE_SUCCESS,
    RESOURCE_WRITE_TYPES,
    Ignored,
    Malformed,
    OnlineTarget,
    ResourceWriteEvent,
    distinct_writes,
    online_target,
    parse_event,
    parse_events,
    workspace_resource_id,
)
from bridge.service import Bridge
from bridge.settings import Settings
from bridge.webhook import answer

LIFECYCLE = Path(__file__).parents[1] / "fixtures" / "lifecycle"
# file: (schema, event type); every resource write fixture there, and no other
WRITES = {
    "eventgrid-resource-write-success.rest-specs.json": ("eventgrid", RESOURCE_WRITE_SUCCESS),
    "eventgrid-resource-write-failure.rest-specs.json": ("eventgrid", RESOURCE_WRITE_FAILURE),
    "eventgrid-resource-write-cancel.rest-specs.json": ("eventgrid", RESOURCE_WRITE_CANCEL),
    "cloudevent-resource-write-cancel.rest-specs.specVersion.json":
        ("cloudevents", RESOURCE_WRITE_CANCEL),
}  # fmt: skip
OUTCOMES = {RESOURCE_WRITE_SUCCESS: Outcome.COMPLETED, RESOURCE_WRITE_FAILURE: Outcome.FAILED,
            RESOURCE_WRITE_CANCEL: Outcome.CANCELED}  # fmt: skip
STORAGE = "providers/Microsoft.Storage/storageAccounts/{storage-name}"
# The fixtures' own subscription and group, spelled as in their subjects (`resourcegroups`).
GROUP = "/subscriptions/{subscription-id}/resourcegroups/{resource-group}"
WORKSPACE = workspace_resource_id("{subscription-id}", "{resource-group}", "ml-prod")
ML = "providers/Microsoft.MachineLearningServices/workspaces/ml-prod"
DEPLOYMENT = f"{GROUP}/{ML}/onlineEndpoints/churn/deployments/blue"
ENDPOINT = f"{GROUP}/{ML}/onlineEndpoints/churn"
DEPLOYMENT_WRITE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments/write"
ENDPOINT_WRITE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/write"


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((LIFECYCLE / name).read_text())
    return loaded


def pointed_at(
    raw: dict[str, Any], resource: str, operation: str, correlation: str = "corr-1"
) -> dict[str, Any]:
    """The payload with every field naming the storage account naming `resource` instead."""
    moved = copy.deepcopy(raw)
    moved["subject"] = resource
    data = moved["data"]
    data.update(resourceUri=resource, operationName=operation, correlationId=correlation,
                resourceProvider="Microsoft.MachineLearningServices")  # fmt: skip
    data["authorization"].update(scope=resource, action=operation)
    return moved


def write(
    resource: str = DEPLOYMENT, correlation: str = "corr-1", event_id: str = "e-1",
    event_type: str = RESOURCE_WRITE_SUCCESS,
) -> dict[str, Any]:  # fmt: skip
    raw = pointed_at(fixture("eventgrid-resource-write-success.rest-specs.json"), resource,
                     DEPLOYMENT_WRITE, correlation)  # fmt: skip
    return {**raw, "id": event_id, "eventType": event_type}


def parsed_write(raw: dict[str, Any]) -> ResourceWriteEvent:
    event = parse_event(raw)
    assert isinstance(event, ResourceWriteEvent), event
    return event


def test_every_resource_write_fixture_is_covered_here() -> None:
    on_disk = {path.name for path in LIFECYCLE.glob("*resource-write*.json")}
    assert on_disk == set(WRITES)
    assert {event_type for _, event_type in WRITES.values()} == RESOURCE_WRITE_TYPES


@pytest.mark.parametrize("name", sorted(WRITES))
def test_a_real_write_of_another_resource_of_the_group_is_ignored_not_refused(name: str) -> None:
    [event] = parse_events((LIFECYCLE / name).read_bytes())
    assert isinstance(event, Ignored), event
    assert (event.type, event.reason) == (WRITES[name][1], NOT_AN_ONLINE_TARGET)
    assert event.id == "4db48cba-50a2-455a-93b4-de41a3b5b7f6"


@pytest.mark.parametrize("name", sorted(WRITES))
def test_a_real_write_pointed_at_a_deployment_reads_in_both_schemas(name: str) -> None:
    schema, event_type = WRITES[name]
    raw = pointed_at(fixture(name), DEPLOYMENT, DEPLOYMENT_WRITE, "9f3c-corr")

    [event] = parse_events(json.dumps(raw))

    assert isinstance(event, ResourceWriteEvent), event
    assert (event.id, event.type, event.schema) == (
        "4db48cba-50a2-455a-93b4-de41a3b5b7f6", event_type, schema,
    )  # fmt: skip
    assert (event.subject, event.resource_uri) == (DEPLOYMENT, DEPLOYMENT)
    assert (event.correlation_id, event.operation_name) == ("9f3c-corr", DEPLOYMENT_WRITE)
    assert event.time == "2018-07-19T18:38:04.6117357Z"
    assert event.source == "/subscriptions/{subscription-id}/resourceGroups/{resource-group}"
    assert event.target_in(WORKSPACE) == OnlineTarget("churn", "blue")


@pytest.mark.parametrize("name", sorted(WRITES))
def test_the_event_type_says_how_the_write_went_not_the_copied_status(name: str) -> None:
    """The spec's Failure and Cancel examples carry the Success body, "status": "Succeeded"."""
    event = parsed_write(pointed_at(fixture(name), DEPLOYMENT, DEPLOYMENT_WRITE))
    assert event.status == "Succeeded"
    assert event.outcome is OUTCOMES[WRITES[name][1]]


def test_the_cloudevent_with_specVersion_spelled_so_is_read() -> None:  # noqa: N802
    raw = fixture("cloudevent-resource-write-cancel.rest-specs.specVersion.json")
    assert "specVersion" in raw and "specversion" not in raw
    event = parsed_write(pointed_at(raw, ENDPOINT, ENDPOINT_WRITE))
    assert (event.schema, event.outcome) == ("cloudevents", Outcome.CANCELED)


def test_an_endpoint_write_names_the_endpoint_and_no_deployment() -> None:
    event = parsed_write(write(ENDPOINT))
    assert event.target_in(WORKSPACE) == OnlineTarget("churn", None)


@pytest.mark.parametrize(
    "resource",
    [
        f"{GROUP}/{ML}",  # the workspace itself
        f"{GROUP}/{ML}/batchEndpoints/nightly",
        f"{GROUP}/{ML}/batchEndpoints/nightly/deployments/blue",
        f"{GROUP}/{ML}/computes/cpu-cluster",
        f"{GROUP}/{ML}/onlineEndpoints/churn/deployments/blue/skus",  # deeper than a deployment
        f"{GROUP}/{ML}/onlineEndpoints",
        f"{GROUP}/providers/Microsoft.KeyVault/vaults/kv-1",
        f"{GROUP}/{STORAGE}",
    ],
)
def test_writes_of_anything_but_an_online_endpoint_or_deployment_are_ignored(
    resource: str,
) -> None:
    event = parse_event(write(resource))
    assert isinstance(event, Ignored) and event.reason == NOT_AN_ONLINE_TARGET


def test_another_workspaces_deployment_parses_but_is_no_target_of_this_one() -> None:
    other = DEPLOYMENT.replace("workspaces/ml-prod/", "workspaces/ml-dev/")
    event = parsed_write(write(other))
    assert event.target_in(WORKSPACE) is None
    dev = workspace_resource_id("{subscription-id}", "{resource-group}", "ml-dev")
    assert event.target_in(dev) == OnlineTarget("churn", "blue")


@pytest.mark.parametrize(
    "resource",
    [
        DEPLOYMENT,
        DEPLOYMENT.upper().replace("CHURN", "churn").replace("BLUE", "blue"),
        DEPLOYMENT.replace("resourcegroups", "resourceGroups"),
        DEPLOYMENT.replace("Microsoft.MachineLearningServices", "microsoft.machinelearningservices")
        .replace("onlineEndpoints", "onlineendpoints")
        .replace("deployments", "Deployments"),
        DEPLOYMENT + "/",
    ],
)
def test_the_target_is_read_case_insensitively_as_arm_compares_ids(resource: str) -> None:
    assert online_target(resource, WORKSPACE) == OnlineTarget("churn", "blue")
    assert online_target(resource, WORKSPACE.upper()) == OnlineTarget("churn", "blue")


def test_names_come_back_as_the_resource_id_spells_them() -> None:
    resource = f"{GROUP}/{ML}/onlineEndpoints/Churn-EP/deployments/Blue-2"
    assert online_target(resource, WORKSPACE) == OnlineTarget("Churn-EP", "Blue-2")


@pytest.mark.parametrize(
    "resource",
    [
        DEPLOYMENT.replace("workspaces/ml-prod/", "workspaces/ml-prod2/"),  # a longer name
        DEPLOYMENT.replace("workspaces/ml-prod/", "workspaces/ml/"),  # a shorter one
        DEPLOYMENT.replace("{resource-group}", "rg-other"),
        DEPLOYMENT.replace("{subscription-id}", "00000000-0000-0000-0000-000000000000"),
        DEPLOYMENT.replace("MachineLearningServices", "MachineLearning"),
        "onlineEndpoints/churn/deployments/blue",
        "",
    ],
)
def test_nothing_of_another_workspace_or_provider_is_a_target(resource: str) -> None:
    assert online_target(resource, WORKSPACE) is None


@pytest.mark.parametrize(
    "workspace",
    ["ml-prod", f"{GROUP}", f"{WORKSPACE}/onlineEndpoints/churn", ""],
)
def test_a_workspace_that_is_no_workspace_arm_id_is_refused(workspace: str) -> None:
    with pytest.raises(ValueError, match="not an Azure ML workspace's ARM id"):
        online_target(DEPLOYMENT, workspace)


def test_one_operations_several_events_are_read_once_keeping_the_first_in_order() -> None:
    other_deployment = DEPLOYMENT.replace("/blue", "/green")
    batch = [
        write(DEPLOYMENT, "op-1", "a"),
        write(ENDPOINT, "op-1", "b"),  # same operation, another resource: kept
        write(DEPLOYMENT.upper(), "OP-1", "c", RESOURCE_WRITE_FAILURE),  # the same, spelled so
        write(other_deployment, "op-2", "d"),
        write(DEPLOYMENT, "op-3", "e"),  # a later operation on the same deployment: kept
        write(other_deployment, "op-2", "f"),
        write(DEPLOYMENT, "op-1", "a"),  # Event Grid delivered "a" twice
    ]
    events = [parsed_write(raw) for raw in batch]

    assert [event.id for event in distinct_writes(events)] == ["a", "b", "d", "e"]
    assert distinct_writes([]) == []


def test_writes_without_a_correlation_id_each_stand_alone() -> None:
    first, second = (write(DEPLOYMENT, "", event_id) for event_id in ("a", "b"))
    for raw in (first, second):
        del raw["data"]["correlationId"]
    events = [parsed_write(first), parsed_write(second), parsed_write(first)]
    assert events[0].correlation_id is None
    assert [event.id for event in distinct_writes(events)] == ["a", "b"]


def test_a_resource_write_without_a_subject_is_malformed_naming_the_field() -> None:
    for missing in (
        {k: v for k, v in write().items() if k != "subject"},
        {**write(), "subject": ""},
    ):
        [event] = parse_events(json.dumps([missing]))
        assert isinstance(event, Malformed), event
        assert "'subject' is missing" in event.reason and event.id == "e-1"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"subject": ["not", "a", "string"]}, "'subject' must be a string"),
        ({"data": "not json"}, "'data' is a string but not JSON"),
        ({"data": ["a list"]}, "'data' must be an object"),
        ({"data": {"correlationId": 7}}, "data.correlationId must be a string, not int"),
        ({"data": {"resourceUri": {"a": 1}}}, "data.resourceUri must be a string, not dict"),
        ({"eventTime": 20180719}, "'eventTime' must be a string"),
    ],
)
def test_a_deployment_write_out_of_shape_is_malformed_naming_the_field(
    change: dict[str, Any],
    named: str,
) -> None:
    [event] = parse_events(json.dumps({**write(), **change}))
    assert isinstance(event, Malformed), event
    assert named in event.reason


def test_data_as_json_text_and_keys_in_another_casing_are_read() -> None:
    raw = write()
    data = {key[0].upper() + key[1:]: value for key, value in raw["data"].items()}
    event = parsed_write({**raw, "data": json.dumps(data)})
    assert (event.correlation_id, event.operation_name) == ("corr-1", DEPLOYMENT_WRITE)


def test_a_mixed_batch_is_judged_event_by_event() -> None:
    storage = fixture("eventgrid-resource-write-failure.rest-specs.json")
    batch = [write(), storage, {**write(), "subject": None}, write(ENDPOINT, event_id="e-2")]
    kinds = [type(item).__name__ for item in parse_events(json.dumps(batch))]
    assert kinds == ["ResourceWriteEvent", "Ignored", "Malformed", "ResourceWriteEvent"]


def test_the_webhook_needs_its_backend_only_for_writes_of_online_endpoints() -> None:
    """Another resource's write is answered as ignored without building the bridge; a
    deployment's needs the bridge (it reads the deployment), so no configuration is a 500 that
    Event Grid retries."""

    def unconfigured() -> Bridge:
        from bridge.composition import build

        return build(Settings())  # raises ConfigurationError: nothing is configured

    storage = fixture("eventgrid-resource-write-success.rest-specs.json")
    body = json.dumps([write(), storage]).encode()

    only_storage = json.dumps([storage]).encode()
    reply = answer("POST", {"Content-Type": "application/json"}, only_storage, unconfigured)
    assert reply.status == 200
    assert reply.body == {
        "results": [{"id": storage["id"], "result": "ignored", "detail": NOT_AN_ONLINE_TARGET}]
    }

    reply = answer("POST", {"Content-Type": "application/json"}, body, unconfigured)
    assert reply.status == 500
    assert "is not set" in json.loads(reply.content())["error"]
