"""The Event Grid subscriptions' filters are valid and let through the events the bridge needs.

`deliver` evaluates the filter the way Event Grid documents it (event-filtering, "Advanced
filtering"): filters are ANDed, a filter's values ORed (NotIn operators: none may match), string
comparisons are case-insensitive, a missing key is *matched* by StringNotIn/NumberNotIn and *not
matched* by the other value operators, IsNotNull is false for a missing or null key;
`subjectBeginsWith` and `subjectEndsWith` compare case-insensitively unless
`isSubjectCaseSensitive`. Whether a filter *key* such as `data.runTags.x` matches `data.RunTags.x`
is not documented, so every test runs with keys matched exactly and case-insensitively: the filter
must deliver the same either way. The events are the real public payloads of tests/fixtures/events,
pointed at a bridge job, and for the lifecycle subscriptions (models registered, ARM writes of
online endpoints and deployments) those of tests/fixtures/lifecycle.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bridge.contracts import JOB_NAME_SUFFIX, Origin, job_name
from bridge.events import (
    MODEL_REGISTERED,
    RESOURCE_WRITE_TYPES,
    ResourceWriteEvent,
    online_target,
    parse_event,
    workspace_resource_id,
)

from .templates import Templates

SUBSCRIPTION = "modules/eventgrid-subscription.bicep"
MODEL_SUBSCRIPTION = "modules/eventgrid-model-subscription.bicep"
RESOURCE_SUBSCRIPTION = "modules/eventgrid-resource-subscription.bicep"
# file -> the subscription's symbol in it
SUBSCRIPTIONS = {SUBSCRIPTION: "toBridge", MODEL_SUBSCRIPTION: "modelsToBridge",
                 RESOURCE_SUBSCRIPTION: "endpointWrites"}  # fmt: skip
RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "events"
LIFECYCLE = Path(__file__).parents[1] / "fixtures" / "lifecycle"
# Documented limits: 25 advanced filters and 25 values across them per subscription, 512 characters
# per string value; keys cannot address a name containing a dot.
MAX_FILTERS = 25
MAX_VALUES = 25
MAX_VALUE_LENGTH = 512
OPERATORS = {
    "NumberIn", "NumberNotIn", "NumberLessThan", "NumberGreaterThan", "NumberLessThanOrEquals",
    "NumberGreaterThanOrEquals", "NumberInRange", "NumberNotInRange", "BoolEquals", "StringIn",
    "StringNotIn", "StringBeginsWith", "StringNotBeginsWith", "StringEndsWith",
    "StringNotEndsWith", "StringContains", "StringNotContains", "IsNullOrUndefined", "IsNotNull",
}
KEY_MATCHING = ["exact", "case-insensitive"]
BRIDGE_JOB = job_name(Origin(dag_id="train", run_id="manual__1", task_id="submit"))
_MISSING = object()


def filter_of(templates: Templates, file: str = SUBSCRIPTION) -> dict[str, Any]:
    """A subscription's filter with variable references replaced by their values."""
    found = templates.resource(file, SUBSCRIPTIONS[file])["properties"]["filter"]
    advanced = [
        {name: templates.value(file, value) for name, value in entry.items()}
        for entry in found.get("advancedFilters", [])
    ]
    resolved = {name: templates.value(file, value) for name, value in found.items()}
    return {**resolved, "advancedFilters": advanced}


def lookup(event: Mapping[str, Any], key: str, keys: str) -> Any:
    node: Any = event
    for part in key.split("."):
        if not isinstance(node, Mapping):
            return _MISSING
        if keys == "case-insensitive":
            folded = {str(name).casefold(): value for name, value in node.items()}
            node = folded.get(part.casefold(), _MISSING)
        else:
            node = node.get(part, _MISSING)
        if node is _MISSING:
            return _MISSING
    return node


def matches(advanced: Mapping[str, Any], event: Mapping[str, Any], keys: str) -> bool:
    found = lookup(event, advanced["key"], keys)
    operator = advanced["operatorType"]
    if operator == "IsNotNull":
        return found is not _MISSING and found is not None
    if operator == "IsNullOrUndefined":
        return found is _MISSING or found is None
    values = {str(v).casefold() for v in advanced.get("values", [])}
    if found is _MISSING:
        return operator in {"StringNotIn", "NumberNotIn"}
    if operator == "StringIn":
        return str(found).casefold() in values
    if operator == "StringNotIn":
        return str(found).casefold() not in values
    raise AssertionError(f"the filter model does not cover {operator}")


def deliver(event_filter: Mapping[str, Any], event: Mapping[str, Any], keys: str) -> bool:
    types = {t.casefold() for t in event_filter["includedEventTypes"]}
    subject = event.get("subject", "")
    prefix = event_filter.get("subjectBeginsWith", "")
    suffix = event_filter.get("subjectEndsWith", "")
    if not event_filter.get("isSubjectCaseSensitive", False):
        subject, prefix, suffix = subject.casefold(), prefix.casefold(), suffix.casefold()
    return (
        event["eventType"].casefold() in types
        and subject.startswith(prefix)
        and subject.endswith(suffix)
        and all(matches(advanced, event, keys) for advanced in event_filter["advancedFilters"])
    )


def job_event(event_type: str, status: str | None = None, job: str = BRIDGE_JOB) -> dict[str, Any]:
    data: dict[str, Any] = {
        "experimentId": "0fa9dfaa-cba3-4fa7-b590-23e48548f5c1", "experimentName": "exp",
        "runId": job, "runType": None, "runProperties": {},
        "runTags": {"bridge_submission": job, "bridge_signature": "sig"},
    }
    if status is not None:
        data["runStatus"] = status
    return {"eventType": event_type, "subject": f"experiments/0fa9/runs/{job}", "data": data}


def real_event(name: str, job: str = BRIDGE_JOB) -> dict[str, Any]:
    """A fixture in the Event Grid schema (CloudEvents mapped onto it), pointed at `job`."""
    loaded = json.loads((FIXTURES / name).read_text())
    raw = copy.deepcopy(loaded[0] if isinstance(loaded, list) else loaded)
    if "eventType" not in raw:  # CloudEvents: the same filter applies to type and subject
        raw = {"eventType": raw["type"], "subject": raw["subject"], "data": raw["data"]}
    raw["subject"] = raw["subject"].rsplit("/", 1)[0] + f"/{job}"
    raw["data"]["runId"] = job
    return dict(raw)


def test_filter_keys_address_no_dotted_name_and_stay_within_limits(templates: Templates) -> None:
    advanced = filter_of(templates)["advancedFilters"]
    assert len(advanced) <= MAX_FILTERS
    assert sum(len(entry.get("values", [])) for entry in advanced) <= MAX_VALUES
    values = [str(v) for entry in advanced for v in entry.get("values", [])]
    assert all(len(value) <= MAX_VALUE_LENGTH for value in values)
    assert {entry["operatorType"] for entry in advanced} <= OPERATORS


def test_filter_names_no_tags_key_whose_casing_azure_varies(templates: Templates) -> None:
    keys = [entry["key"].casefold() for entry in filter_of(templates)["advancedFilters"]]
    assert not [key for key in keys if key.startswith("data.runtags")]


def test_filter_picks_the_bridge_jobs_by_the_job_name_suffix_the_code_gives(
    templates: Templates,
) -> None:
    event_filter = filter_of(templates)
    assert event_filter["subjectEndsWith"] == JOB_NAME_SUFFIX
    assert event_filter["isSubjectCaseSensitive"] is False
    assert BRIDGE_JOB.endswith(JOB_NAME_SUFFIX)


def test_filter_includes_both_azure_ml_job_event_types(templates: Templates) -> None:
    assert set(filter_of(templates)["includedEventTypes"]) == {RUN_COMPLETED, RUN_STATUS_CHANGED}


@pytest.mark.parametrize("keys", KEY_MATCHING)
@pytest.mark.parametrize("status", ["Completed", "Failed", "Canceled", "failed", "COMPLETED"])
def test_terminal_status_of_a_bridge_job_is_delivered_in_any_casing(
    templates: Templates, status: str, keys: str,
) -> None:
    assert deliver(filter_of(templates), job_event(RUN_STATUS_CHANGED, status), keys)


@pytest.mark.parametrize("keys", KEY_MATCHING)
def test_run_completed_without_run_status_is_delivered(templates: Templates, keys: str) -> None:
    assert deliver(filter_of(templates), job_event(RUN_COMPLETED), keys)


@pytest.mark.parametrize("keys", KEY_MATCHING)
@pytest.mark.parametrize(
    ("fixture", "delivered"),
    [
        ("eventgrid-run-completed.sdk-net.json", True),  # tags under RunTags
        ("cloudevent-run-completed.sdk-go.json", True),
        ("eventgrid-run-completed.rest-specs.json", True),
        ("cloudevent-run-completed.rest-specs.json", True),
        ("eventgrid-run-status-changed.rest-specs.json", True),  # "failed"
        ("cloudevent-run-status-changed.rest-specs.specVersion.json", True),
        ("eventgrid-run-status-changed.sdk-net.json", False),  # "Running"
        ("cloudevent-run-status-changed.sdk-go.json", False),
        ("eventgrid-model-registered.sdk-net.json", False),
    ],
)
def test_real_payload_shapes_of_a_bridge_job_are_delivered_when_terminal(
    templates: Templates, fixture: str, delivered: bool, keys: str,
) -> None:
    assert deliver(filter_of(templates), real_event(fixture), keys) is delivered


@pytest.mark.parametrize("keys", KEY_MATCHING)
def test_run_status_key_in_another_casing_still_delivers_a_terminal_event(
    templates: Templates, keys: str,
) -> None:
    event = job_event(RUN_STATUS_CHANGED)
    event["data"]["RunStatus"] = "Failed"
    assert deliver(filter_of(templates), event, keys)


@pytest.mark.parametrize("keys", KEY_MATCHING)
@pytest.mark.parametrize(
    "status", ["NotStarted", "Starting", "Preparing", "Queued", "Running", "running", "Finalizing"],
)
def test_non_terminal_status_is_not_delivered(templates: Templates, status: str, keys: str) -> None:
    assert not deliver(filter_of(templates), job_event(RUN_STATUS_CHANGED, status), keys)


def test_status_azure_ml_adds_later_is_delivered_rather_than_dropped(templates: Templates) -> None:
    event = job_event(RUN_STATUS_CHANGED, "SomeFutureStatus")
    assert deliver(filter_of(templates), event, "exact")


@pytest.mark.parametrize("keys", KEY_MATCHING)
@pytest.mark.parametrize("fixture", ["eventgrid-run-completed.sdk-net.json",
                                     "eventgrid-run-status-changed.rest-specs.json"])
def test_job_not_created_by_the_bridge_is_not_delivered(
    templates: Templates, fixture: str, keys: str,
) -> None:
    foreign = real_event(fixture, job="AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc")
    assert not deliver(filter_of(templates), foreign, keys)


def test_model_registered_event_is_not_delivered(templates: Templates) -> None:
    event = job_event("Microsoft.MachineLearningServices.ModelRegistered", "Completed")
    assert not deliver(filter_of(templates), event, "exact")


@pytest.mark.parametrize("file", sorted(SUBSCRIPTIONS))
def test_undeliverable_events_are_retried_for_a_day_then_dead_lettered_by_identity(
    templates: Templates, file: str,
) -> None:
    properties = templates.resource(file, SUBSCRIPTIONS[file])["properties"]
    retry = properties["retryPolicy"]
    assert (retry["maxDeliveryAttempts"], retry["eventTimeToLiveInMinutes"]) == (30, 1440)
    dead_letter = properties["deadLetterWithResourceIdentity"]
    assert dead_letter["identity"] == {"type": "SystemAssigned"}
    assert dead_letter["deadLetterDestination"]["endpointType"] == "StorageBlob"
    assert "deadLetterDestination" not in properties, "a key-based dead-letter destination"
    assert properties["eventDeliverySchema"] == "EventGridSchema"


# The lifecycle subscriptions: models registered (the workspace's topic) and ARM writes of the
# workspace's online endpoints and deployments (the resource group's topic).
# Bicep's `workspace.id` spells `resourceGroups`; ARM's event subjects spell `resourcegroups`.
WORKSPACE_ID = workspace_resource_id("sub-1", "rg-ml", "ml-prod")
SUBJECT_GROUP = "/subscriptions/sub-1/resourcegroups/rg-ml"
ML = f"{SUBJECT_GROUP}/providers/Microsoft.MachineLearningServices/workspaces/ml-prod"
DEPLOYMENT = f"{ML}/onlineEndpoints/churn/deployments/blue"
ENDPOINT = f"{ML}/onlineEndpoints/churn"
RESOURCE_WRITES = sorted(p.name for p in LIFECYCLE.glob("*resource-write*.json"))


def resource_filter(templates: Templates) -> dict[str, Any]:
    """The resource writes' filter for the workspace WORKSPACE_ID, as Bicep would render it."""
    event_filter = filter_of(templates, RESOURCE_SUBSCRIPTION)
    prefix = event_filter["subjectBeginsWith"]
    assert prefix.startswith("${workspace.id}/"), prefix
    return {**event_filter, "subjectBeginsWith": prefix.replace("${workspace.id}", WORKSPACE_ID)}


def resource_write(name: str, resource: str) -> dict[str, Any]:
    """A real resource write payload (Event Grid schema; CloudEvents mapped onto it), pointed at
    `resource` in every field that names the written resource."""
    raw = json.loads((LIFECYCLE / name).read_text())
    if "eventType" not in raw:
        raw = {**raw, "eventType": raw.pop("type"), "topic": raw.pop("source")}
        raw = {key: value for key, value in raw.items() if key.lower() != "specversion"}
    raw["subject"] = resource
    raw["data"].update(resourceUri=resource, correlationId="op-1")
    return dict(raw)


def test_resource_write_subscription_takes_exactly_the_types_the_bridge_parses(
    templates: Templates,
) -> None:
    event_filter = filter_of(templates, RESOURCE_SUBSCRIPTION)
    assert set(event_filter["includedEventTypes"]) == RESOURCE_WRITE_TYPES
    assert event_filter["isSubjectCaseSensitive"] is False
    assert event_filter["subjectBeginsWith"] == "${workspace.id}/onlineEndpoints/"
    assert "subjectEndsWith" not in event_filter


def test_resource_write_subscription_names_the_workspace_the_bridge_is_given(
    templates: Templates,
) -> None:
    workspace = templates.parsed[RESOURCE_SUBSCRIPTION]["resources"]["workspace"]
    assert workspace["type"] == "Microsoft.MachineLearningServices/workspaces"
    assert workspace["config"]["name"] == "workspaceName"
    module = templates.module("resourceSubscription")
    assert module["params"]["workspaceName"] == "workspaceName"
    # The workspace is looked up where it lives: the module runs in the workspace's group.
    scope = module["scope"]["function"]["parameters"]["resource_group_name"]
    assert scope == "workspaceResourceGroup"


@pytest.mark.parametrize("keys", KEY_MATCHING)
@pytest.mark.parametrize("name", RESOURCE_WRITES)
@pytest.mark.parametrize("resource", [DEPLOYMENT, ENDPOINT, DEPLOYMENT.upper()])
def test_a_write_of_this_workspaces_endpoint_or_deployment_is_delivered(
    templates: Templates,
    name: str,
    resource: str,
    keys: str,
) -> None:
    assert deliver(resource_filter(templates), resource_write(name, resource), keys)


@pytest.mark.parametrize("keys", KEY_MATCHING)
@pytest.mark.parametrize("name", RESOURCE_WRITES)
@pytest.mark.parametrize(
    "resource",
    [
        DEPLOYMENT.replace("workspaces/ml-prod/", "workspaces/ml-prod2/"),
        DEPLOYMENT.replace("workspaces/ml-prod/", "workspaces/ml-dev/"),
        DEPLOYMENT.replace("rg-ml", "rg-other"),
        DEPLOYMENT.replace("sub-1", "sub-2"),
        ML,  # the workspace itself
        f"{ML}/batchEndpoints/nightly/deployments/blue",
        f"{ML}/computes/cpu-cluster",
        f"{SUBJECT_GROUP}/providers/Microsoft.Storage/storageAccounts/stml",
    ],
)
def test_nothing_of_another_workspace_or_resource_is_delivered(
    templates: Templates,
    name: str,
    resource: str,
    keys: str,
) -> None:
    assert not deliver(resource_filter(templates), resource_write(name, resource), keys)


@pytest.mark.parametrize("name", RESOURCE_WRITES)
def test_the_real_storage_account_writes_are_not_delivered(templates: Templates, name: str) -> None:
    raw = resource_write(name, "")
    raw["subject"] = json.loads((LIFECYCLE / name).read_text())["subject"]
    assert not deliver(resource_filter(templates), raw, "exact")


@pytest.mark.parametrize(
    "resource",
    [DEPLOYMENT, ENDPOINT, DEPLOYMENT.upper(), f"{ENDPOINT}/deployments/green",
     DEPLOYMENT.replace("ml-prod", "ml-prod2"), f"{ML}/batchEndpoints/nightly", ML],
)  # fmt: skip
def test_the_filter_never_drops_a_write_the_bridge_reads_as_this_workspaces(
    templates: Templates,
    resource: str,
) -> None:
    """The filter and bridge/events.py agree: what the parser names as an endpoint or deployment
    of the workspace is delivered, and what is delivered parses as a resource write."""
    raw = resource_write(RESOURCE_WRITES[0], resource)
    delivered = deliver(resource_filter(templates), raw, "exact")
    parsed = parse_event(raw)
    ours = isinstance(parsed, ResourceWriteEvent) and parsed.target_in(WORKSPACE_ID) is not None
    assert delivered == ours
    assert ours == (online_target(resource, WORKSPACE_ID) is not None)


def test_run_events_of_the_workspace_are_not_resource_writes(templates: Templates) -> None:
    event = job_event(RUN_COMPLETED)
    event["subject"] = f"{ENDPOINT}/{event['subject']}"
    assert not deliver(resource_filter(templates), event, "exact")


def test_model_subscription_takes_model_registered_only(templates: Templates) -> None:
    event_filter = filter_of(templates, MODEL_SUBSCRIPTION)
    assert event_filter["includedEventTypes"] == [MODEL_REGISTERED]
    assert event_filter["advancedFilters"] == []


@pytest.mark.parametrize("keys", KEY_MATCHING)
@pytest.mark.parametrize(
    "path",
    sorted([*FIXTURES.glob("*model-registered*.json"), *LIFECYCLE.glob("*model-registered*.json")]),
    ids=lambda path: path.name,
)
def test_a_model_registered_anywhere_is_delivered(
    templates: Templates,
    path: Path,
    keys: str,
) -> None:
    loaded = json.loads(path.read_text())
    raw = loaded[0] if isinstance(loaded, list) else loaded
    event = {"eventType": raw.get("eventType") or raw["type"], "subject": raw.get("subject", ""),
             "data": raw["data"]}  # fmt: skip
    assert deliver(filter_of(templates, MODEL_SUBSCRIPTION), event, keys)


@pytest.mark.parametrize(
    "event_type",
    [RUN_COMPLETED, RUN_STATUS_CHANGED, "Microsoft.MachineLearningServices.ModelDeployed"],
)
def test_the_model_subscription_delivers_no_other_event(
    templates: Templates,
    event_type: str,
) -> None:
    assert not deliver(filter_of(templates, MODEL_SUBSCRIPTION), job_event(event_type), "exact")
