from __future__ import annotations

import json
import re
from typing import Any

import pytest

from bridge.contracts import Outcome
from bridge.errors import InvalidEvent
from bridge.events import (
    RUN_COMPLETED,
    RUN_STATUS_CHANGED,
    Ignored,
    JobEvent,
    Malformed,
    Validation,
    parse_event,
    parse_events,
)

TOPIC = (
    "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"
)


def event_grid(event_type: str = RUN_STATUS_CHANGED, **data: Any) -> dict[str, Any]:
    """The documentation's sample, shortened (shared/REFERENCE.md)."""
    return {
        "id": "831e1650-001e-001b-66ab-eeb76e069631",
        "topic": TOPIC,
        "subject": "experiments/0fa9dfaa/runs/my-job-name",
        "eventType": event_type,
        "eventTime": "2017-06-26T18:41:00.9584103Z",
        "data": {
            "experimentId": "0fa9dfaa",
            "experimentName": "exp",
            "runId": "my-job-name",
            "runType": None,
            "runTags": {"bridge_submission": "my-job-name"},
            "runProperties": {},
            **data,
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


def cloud_event(event_type: str = RUN_STATUS_CHANGED, **data: Any) -> dict[str, Any]:
    raw = event_grid(event_type, **data)
    return {
        "id": raw["id"],
        "source": TOPIC,
        "subject": raw["subject"],
        "type": event_type,
        "time": raw["eventTime"],
        "specversion": "1.0",
        "data": raw["data"],
    }


@pytest.mark.parametrize("status", ["failed", "Failed", "FAILED"])
def test_status_is_compared_case_insensitively(status: str) -> None:
    event = parse_event(event_grid(runStatus=status))
    assert isinstance(event, JobEvent)
    assert event.status == "Failed" and event.outcome is Outcome.FAILED


def test_run_completed_and_status_changed_completed_are_the_same_fact() -> None:
    completed = parse_event(event_grid(RUN_COMPLETED))
    changed = parse_event(event_grid(runStatus="Completed"))
    assert isinstance(completed, JobEvent) and isinstance(changed, JobEvent)
    assert completed.outcome is changed.outcome is Outcome.COMPLETED


@pytest.mark.parametrize(
    ("status", "outcome"),
    [("Running", None), ("NotStarted", None), ("Canceled", Outcome.CANCELED),
     ("cancelled", Outcome.CANCELED), ("NotResponding", None), ("Paused", None)],
)  # fmt: skip
def test_only_completed_failed_canceled_are_outcomes(status: str, outcome: Outcome | None) -> None:
    event = parse_event(event_grid(runStatus=status))
    assert isinstance(event, JobEvent) and event.outcome is outcome


def test_cloudevent_parses_like_event_grid_schema() -> None:
    event = parse_event(cloud_event(runStatus="Completed"))
    assert isinstance(event, JobEvent)
    assert event.schema == "cloudevents"
    assert (event.job_name, event.workspace, event.experiment_name) == ("my-job-name", "ws", "exp")
    assert event.tags == {"bridge_submission": "my-job-name"}


def test_batch_in_both_shapes() -> None:
    batch = json.dumps([event_grid(runStatus="Running"), event_grid(RUN_COMPLETED)])
    assert [e.outcome for e in parse_events(batch) if isinstance(e, JobEvent)] == [
        None, Outcome.COMPLETED,
    ]  # fmt: skip
    single = json.dumps(cloud_event(runStatus="failed"))
    assert len(parse_events(single)) == 1


def test_other_event_types_are_ignored_with_a_reason() -> None:
    ignored = parse_event(event_grid("Microsoft.MachineLearningServices.DatasetDriftDetected"))
    assert isinstance(ignored, Ignored) and "not an Azure ML run event" in ignored.reason


def test_subscription_validation_is_recognised() -> None:
    raw = event_grid("Microsoft.EventGrid.SubscriptionValidationEvent")
    raw["data"] = {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert parse_event(raw) == Validation("512d38b6-c7b8-40c8-89fe-f46f9e9622b6")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "empty array"),
        (b"[1, 2]", "no JSON object"),
        (b'"a string"', "no JSON object"),
    ],
)
def test_a_body_with_no_event_object_is_refused_naming_the_problem(body: bytes, named: str) -> None:
    with pytest.raises(InvalidEvent, match=re.escape(named)):
        parse_events(body)


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (1, "event [1] is not a JSON object"),
        ({"hello": 1}, "event [1]: not an event"),
        ({**event_grid(), "data": "x"}, "'data' is a string but not JSON"),
        ({**event_grid(), "data": [1]}, "'data' must be an object"),
        (event_grid(runId=None), "data.runId is missing"),
        ({**event_grid(), "id": None}, "'id' is missing"),
        (event_grid(runStatus=3), "runStatus must be a string"),
        (event_grid(runTags=["a"]), "runTags must be an object"),
        ({**event_grid(), "eventTime": 1498502460}, "'eventTime' must be a string, not int"),
        ({**event_grid(), "subject": {"runs": 1}}, "'subject' must be a string, not dict"),
        ({**event_grid(), "topic": 7}, "'topic' must be a string, not int"),
        ({**cloud_event(), "source": ["x"]}, "'source' must be a string, not list"),
    ],
)
def test_each_event_is_judged_alone_and_a_bad_one_names_its_problem(raw: Any, named: str) -> None:
    good = event_grid(RUN_COMPLETED)
    parsed = parse_events(json.dumps([good, raw, good]))
    assert [type(item).__name__ for item in parsed] == ["JobEvent", "Malformed", "JobEvent"]
    bad = parsed[1]
    assert isinstance(bad, Malformed)
    assert named in bad.reason and bad.raw == raw and bad.index == 1


@pytest.mark.parametrize("tags_key", ["runTags", "RunTags", "RUNTAGS"])
def test_data_keys_are_read_whatever_their_casing(tags_key: str) -> None:
    raw = event_grid(RUN_COMPLETED)
    data = raw["data"]
    raw["data"] = {
        "ExperimentName": "exp",
        "RunId": data["runId"],
        tags_key: {"bridge_signature": "sig"},
    }
    event = parse_event(raw)
    assert isinstance(event, JobEvent)
    assert (event.job_name, event.experiment_name) == ("my-job-name", "exp")
    assert event.tags == {"bridge_signature": "sig"}


def test_an_empty_spelling_does_not_hide_the_filled_one() -> None:
    event = parse_event(event_grid(RUN_COMPLETED, runTags={}, RunTags={"bridge_signature": "s"}))
    assert isinstance(event, JobEvent) and event.tags == {"bridge_signature": "s"}


def test_data_sent_as_a_json_string_is_decoded() -> None:
    raw = event_grid(runStatus="Failed")
    raw["data"] = json.dumps(raw["data"])
    event = parse_event(raw)
    assert isinstance(event, JobEvent) and event.outcome is Outcome.FAILED
    assert event.tags == {"bridge_submission": "my-job-name"}


def test_cloudevent_with_specversion_in_another_casing_is_read() -> None:
    raw = cloud_event(runStatus="failed")
    raw["specVersion"] = raw.pop("specversion")
    event = parse_event(raw)
    assert isinstance(event, JobEvent) and event.schema == "cloudevents"
    assert event.outcome is Outcome.FAILED
