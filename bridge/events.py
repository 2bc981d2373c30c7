"""Azure ML run events, in the Event Grid schema or as CloudEvents 1.0, parsed into `JobEvent`s.

Event Grid delivers at least once, in any order, in batches. A completed job may say so twice
(RunCompleted and RunStatusChanged(Completed)); both parse to the same fact, `Outcome.COMPLETED`.
`runStatus` casing varies between Azure's documentation and its deliveries, so it is compared
case-insensitively and normalised to the SDK's spelling.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.contracts import Outcome
from bridge.errors import InvalidEvent

RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
SUBSCRIPTION_VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
RUN_EVENT_TYPES = frozenset({RUN_COMPLETED, RUN_STATUS_CHANGED})

# The statuses azure-ai-ml knows, in its spelling; keys are lower case for the lookup.
_STATUSES = {
    status.lower(): status
    for status in (
        "NotStarted", "Starting", "Provisioning", "Preparing", "Queued", "Running", "Finalizing",
        "CancelRequested", "Completed", "Failed", "Canceled", "NotResponding", "Paused", "Unknown",
    )
}  # fmt: skip
_STATUSES["cancelled"] = "Canceled"
# NotResponding and Paused can still resume, so they are not routed as a final outcome.
_OUTCOMES = {"Completed": Outcome.COMPLETED, "Failed": Outcome.FAILED, "Canceled": Outcome.CANCELED}

Schema = Literal["eventgrid", "cloudevents"]


def normalise_status(status: str) -> str:
    return _STATUSES.get(status.strip().lower(), status.strip())


@dataclass(frozen=True)
class JobEvent:
    """One Azure ML run event, whichever schema carried it."""

    id: str
    type: str
    source: str
    subject: str
    time: str | None
    job_name: str
    status: str | None
    experiment_name: str | None = None
    experiment_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    schema: Schema = "eventgrid"

    @property
    def outcome(self) -> Outcome | None:
        """The terminal fact this event states, or None for progress (Running, Queued...)."""
        return _OUTCOMES.get(self.status or "")

    @property
    def workspace(self) -> str:
        """The workspace name, the last segment of the topic (the workspace's ARM id)."""
        return self.source.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Ignored:
    """An event the bridge has nothing to do with, and why (logged, answered as handled)."""

    id: str
    type: str
    reason: str


@dataclass(frozen=True)
class Validation:
    """An Event Grid subscription handshake: echo `code` to prove we own the endpoint."""

    code: str


Parsed = JobEvent | Ignored | Validation


def parse_body(body: bytes | str) -> list[dict[str, Any]]:
    """A delivery body as a list of events (Event Grid array, CloudEvents single or batch)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"body is not JSON: {exc}") from exc
    events = data if isinstance(data, list) else [data]
    if not events:
        raise InvalidEvent("body is an empty array: expected at least one event")
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise InvalidEvent(f"event [{index}] is not a JSON object")
    return events


def parse_event(raw: Mapping[str, Any]) -> Parsed:
    """One event object, in either schema, as a `JobEvent`, an `Ignored`, or a `Validation`."""
    if "specversion" in raw:
        return _parse(raw, schema="cloudevents", type_key="type", source_key="source",
                      time_key="time")  # fmt: skip
    if "eventType" in raw:
        return _parse(raw, schema="eventgrid", type_key="eventType", source_key="topic",
                      time_key="eventTime")  # fmt: skip
    raise InvalidEvent(
        "not an event: expected 'eventType' (Event Grid schema) or 'specversion' (CloudEvents)"
    )


def parse_events(body: bytes | str) -> list[Parsed]:
    """A whole delivery body; any malformed event rejects the delivery, naming it by index."""
    parsed = []
    for index, raw in enumerate(parse_body(body)):
        try:
            parsed.append(parse_event(raw))
        except InvalidEvent as exc:
            raise InvalidEvent(f"event [{index}]: {exc}") from exc
    return parsed


def _parse(
    raw: Mapping[str, Any], *, schema: Schema, type_key: str, source_key: str, time_key: str
) -> Parsed:
    event_id = _text(raw, "id")
    event_type = _text(raw, type_key)
    data = raw.get("data")
    if event_type == SUBSCRIPTION_VALIDATION:
        code = data.get("validationCode") if isinstance(data, dict) else None
        if not isinstance(code, str) or not code:
            raise InvalidEvent("SubscriptionValidationEvent without data.validationCode")
        return Validation(code)
    if event_type not in RUN_EVENT_TYPES:
        return Ignored(event_id, event_type, "not an Azure ML run event")
    if not isinstance(data, dict):
        raise InvalidEvent(f"{event_type} {event_id}: 'data' must be an object")
    job_name = data.get("runId")
    if not isinstance(job_name, str) or not job_name:
        raise InvalidEvent(f"{event_type} {event_id}: data.runId is missing")
    status = "Completed" if event_type == RUN_COMPLETED else data.get("runStatus")
    if status is not None and not isinstance(status, str):
        raise InvalidEvent(f"{event_type} {event_id}: data.runStatus must be a string")
    tags = data.get("runTags") or {}
    if not isinstance(tags, dict):
        raise InvalidEvent(f"{event_type} {event_id}: data.runTags must be an object")
    time = raw.get(time_key)
    return JobEvent(
        id=event_id,
        type=event_type,
        source=str(raw.get(source_key) or ""),
        subject=str(raw.get("subject") or ""),
        time=str(time) if time is not None else None,
        job_name=job_name,
        status=normalise_status(status) if status else None,
        experiment_name=_optional_text(data, "experimentName"),
        experiment_id=_optional_text(data, "experimentId"),
        tags={str(key): str(value) for key, value in tags.items()},
        schema=schema,
    )


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"'{key}' is missing or not a string")
    return value


def _optional_text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) and value else None
