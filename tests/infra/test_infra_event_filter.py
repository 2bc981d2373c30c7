"""The Event Grid subscription's filter is valid and lets through the events the bridge needs.

`deliver` evaluates the filter the way Event Grid documents it (event-filtering, "Advanced
filtering"): filters are ANDed, a filter's values ORed (NotIn operators: none may match), string
comparisons are case-insensitive, a missing key is *matched* by StringNotIn/NumberNotIn and *not
matched* by the other value operators, IsNotNull is false for a missing or null key;
`subjectEndsWith` compares case-insensitively unless `isSubjectCaseSensitive`. Whether a filter
*key* such as `data.runTags.x` matches `data.RunTags.x` is not documented, so every test runs with
keys matched exactly and case-insensitively: the filter must deliver the same either way. The events
are the real public payloads of tests/fixtures/events, pointed at a bridge job.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bridge.contracts import JOB_NAME_SUFFIX, Origin, job_name

from .templates import Templates

SUBSCRIPTION = "modules/eventgrid-subscription.bicep"
RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "events"
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


def filter_of(templates: Templates) -> dict[str, Any]:
    """The subscription's filter with variable references replaced by their values."""
    found = templates.resource(SUBSCRIPTION, "toBridge")["properties"]["filter"]
    advanced = [
        {name: templates.value(SUBSCRIPTION, value) for name, value in entry.items()}
        for entry in found["advancedFilters"]
    ]
    resolved = {name: templates.value(SUBSCRIPTION, value) for name, value in found.items()}
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
    subject, suffix = event.get("subject", ""), event_filter.get("subjectEndsWith", "")
    if not event_filter.get("isSubjectCaseSensitive", False):
        subject, suffix = subject.casefold(), suffix.casefold()
    return (
        event["eventType"].casefold() in types
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


def test_undeliverable_events_are_retried_for_a_day_then_dead_lettered_by_identity(
    templates: Templates,
) -> None:
    properties = templates.resource(SUBSCRIPTION, "toBridge")["properties"]
    retry = properties["retryPolicy"]
    assert (retry["maxDeliveryAttempts"], retry["eventTimeToLiveInMinutes"]) == (30, 1440)
    dead_letter = properties["deadLetterWithResourceIdentity"]
    assert dead_letter["identity"] == {"type": "SystemAssigned"}
    assert dead_letter["deadLetterDestination"]["endpointType"] == "StorageBlob"
    assert "deadLetterDestination" not in properties, "a key-based dead-letter destination"
    assert properties["eventDeliverySchema"] == "EventGridSchema"
