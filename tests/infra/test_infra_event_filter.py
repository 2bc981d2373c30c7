"""The Event Grid subscription's filter is valid and lets through the events the bridge needs.

`deliver` evaluates the filter the way Event Grid documents it (event-filtering, "Advanced
filtering"): filters are ANDed, a filter's values ORed (NotIn operators: none may match), string
comparisons are case-insensitive, a missing key is *matched* by StringNotIn/NumberNotIn and *not
matched* by the other value operators, IsNotNull is false for a missing or null key. The events are
shaped like the Azure ML events in REFERENCE.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from bridge.contracts import TAG_SUBMISSION

from .templates import Templates

SUBSCRIPTION = "modules/eventgrid-subscription.bicep"
RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
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
_MISSING = object()


def filter_of(templates: Templates) -> dict[str, Any]:
    """The subscription's filter with variable references replaced by their values."""
    found = templates.resource(SUBSCRIPTION, "toBridge")["properties"]["filter"]
    advanced = [
        {name: templates.value(SUBSCRIPTION, value) for name, value in entry.items()}
        for entry in found["advancedFilters"]
    ]
    return {**found, "advancedFilters": advanced}


def lookup(event: Mapping[str, Any], key: str) -> Any:
    node: Any = event
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def matches(advanced: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    found = lookup(event, advanced["key"])
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


def deliver(event_filter: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    types = {t.casefold() for t in event_filter["includedEventTypes"]}
    return event["eventType"].casefold() in types and all(
        matches(advanced, event) for advanced in event_filter["advancedFilters"]
    )


def job_event(event_type: str, status: str | None = None, tagged: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "experimentId": "0fa9dfaa-cba3-4fa7-b590-23e48548f5c1", "experimentName": "exp",
        "runId": "job-1", "runType": None, "runProperties": {},
        "runTags": {TAG_SUBMISSION: "job-1", "bridge_signature": "sig"} if tagged else {},
    }
    if status is not None:
        data["runStatus"] = status
    return {"eventType": event_type, "subject": "experiments/0fa9/runs/job-1", "data": data}


def test_filter_keys_address_no_dotted_name_and_stay_within_limits(templates: Templates) -> None:
    advanced = filter_of(templates)["advancedFilters"]
    assert len(advanced) <= MAX_FILTERS
    assert sum(len(entry.get("values", [])) for entry in advanced) <= MAX_VALUES
    values = [str(v) for entry in advanced for v in entry.get("values", [])]
    assert all(len(value) <= MAX_VALUE_LENGTH for value in values)
    assert {entry["operatorType"] for entry in advanced} <= OPERATORS
    assert "." not in TAG_SUBMISSION
    tag_keys = [e["key"] for e in advanced if e["key"].startswith("data.runTags.")]
    assert tag_keys == [f"data.runTags.{TAG_SUBMISSION}"]


def test_filter_includes_both_azure_ml_job_event_types(templates: Templates) -> None:
    assert set(filter_of(templates)["includedEventTypes"]) == {RUN_COMPLETED, RUN_STATUS_CHANGED}


@pytest.mark.parametrize("status", ["Completed", "Failed", "Canceled", "failed", "COMPLETED"])
def test_terminal_status_of_a_bridge_job_is_delivered_in_any_casing(
    templates: Templates, status: str,
) -> None:
    assert deliver(filter_of(templates), job_event(RUN_STATUS_CHANGED, status))


def test_run_completed_without_run_status_is_delivered(templates: Templates) -> None:
    assert deliver(filter_of(templates), job_event(RUN_COMPLETED))


@pytest.mark.parametrize(
    "status", ["NotStarted", "Starting", "Preparing", "Queued", "Running", "running", "Finalizing"],
)
def test_non_terminal_status_is_not_delivered(templates: Templates, status: str) -> None:
    assert not deliver(filter_of(templates), job_event(RUN_STATUS_CHANGED, status))


def test_status_azure_ml_adds_later_is_delivered_rather_than_dropped(templates: Templates) -> None:
    assert deliver(filter_of(templates), job_event(RUN_STATUS_CHANGED, "SomeFutureStatus"))


@pytest.mark.parametrize("event_type", [RUN_COMPLETED, RUN_STATUS_CHANGED])
def test_job_not_created_by_the_bridge_is_not_delivered(
    templates: Templates, event_type: str,
) -> None:
    assert not deliver(filter_of(templates), job_event(event_type, "Completed", tagged=False))


def test_model_registered_event_is_not_delivered(templates: Templates) -> None:
    event = job_event("Microsoft.MachineLearningServices.ModelRegistered", "Completed")
    assert not deliver(filter_of(templates), event)


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
