"""Azure ML run events, in the Event Grid schema or as CloudEvents 1.0, parsed into `JobEvent`s.

Beside them, model registrations (`ModelEvent`), ARM writes of online endpoints and deployments
(`ResourceWriteEvent`, from the resource group's system topic) and Key Vault's secret events
(`SecretEvent`: the signing key rotates itself) are read the same way.

Event Grid delivers at least once, in any order, in batches. A completed job may say so twice
(RunCompleted and RunStatusChanged(Completed)); both parse to the same fact, `Outcome.COMPLETED`.
`runStatus` casing varies between Azure's documentation and its deliveries, so it is compared
case-insensitively and normalised to the SDK's spelling.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.contracts import Outcome
from bridge.errors import InvalidEvent

RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
SUBSCRIPTION_VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
RUN_EVENT_TYPES = frozenset({RUN_COMPLETED, RUN_STATUS_CHANGED})
MODEL_REGISTERED = "Microsoft.MachineLearningServices.ModelRegistered"
# The subject of a model event, `models/<name>:<version>` (docs/azure-behaviour.md, "Beyond jobs").
_MODEL_SUBJECT = re.compile(r"^models/(?P<name>[^:/]+):(?P<version>[^:/]+)$")
# ARM writes from the resource group's system topic. The event type says how the write ended: the
# REST spec's Failure and Cancel examples carry `"status": "Succeeded"` (docs/azure-behaviour.md).
RESOURCE_WRITE_SUCCESS = "Microsoft.Resources.ResourceWriteSuccess"
RESOURCE_WRITE_FAILURE = "Microsoft.Resources.ResourceWriteFailure"
RESOURCE_WRITE_CANCEL = "Microsoft.Resources.ResourceWriteCancel"
RESOURCE_WRITE_TYPES = frozenset({RESOURCE_WRITE_SUCCESS, RESOURCE_WRITE_FAILURE,
                                  RESOURCE_WRITE_CANCEL})  # fmt: skip
# Key Vault's secret events (its system topic): near expiry (30 days before a version's `exp`),
# expired, a new version. Data keys are PascalCase in the REST spec's examples and camelCase in
# the docs: read case-insensitively, as everything here.
SECRET_NEAR_EXPIRY = "Microsoft.KeyVault.SecretNearExpiry"  # pragma: allowlist secret (a name)
SECRET_EXPIRED = "Microsoft.KeyVault.SecretExpired"  # pragma: allowlist secret (a name)
SECRET_NEW_VERSION = (
    "Microsoft.KeyVault.SecretNewVersionCreated"  # pragma: allowlist secret (a name)
)
SECRET_EVENT_TYPES = frozenset({SECRET_NEAR_EXPIRY, SECRET_EXPIRED, SECRET_NEW_VERSION})
# What a write of any other resource of the group gets: acknowledged, never refused.
NOT_AN_ONLINE_TARGET = (
    "a resource write of something other than an Azure ML online endpoint or deployment"
)
_WRITE_OUTCOMES = {
    RESOURCE_WRITE_SUCCESS: Outcome.COMPLETED,
    RESOURCE_WRITE_FAILURE: Outcome.FAILED,
    RESOURCE_WRITE_CANCEL: Outcome.CANCELED,
}
# ARM ids compare case-insensitively: Azure itself spells `resourcegroups` in event subjects and
# `resourceGroups` in a template's `resourceId()`.
_WORKSPACE_ID = (
    r"/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)"
    r"/providers/Microsoft\.MachineLearningServices/workspaces/(?P<workspace>[^/]+)"
)
_WORKSPACE = re.compile(rf"^{_WORKSPACE_ID}/?$", re.IGNORECASE)
_ONLINE_TARGET = re.compile(
    rf"^{_WORKSPACE_ID}/onlineEndpoints/(?P<endpoint>[^/]+)"
    r"(?:/deployments/(?P<deployment>[^/]+))?/?$",
    re.IGNORECASE,
)

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


def outcome_of(status: str | None) -> Outcome | None:
    """The terminal outcome an Azure ML status states, in any casing; None while it may go on.
    The one map from status to outcome: events and reconciliation both read it."""
    return _OUTCOMES.get(normalise_status(status or ""))


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
        return outcome_of(self.status)

    @property
    def workspace(self) -> str:
        """The workspace name, the last segment of the topic (the workspace's ARM id)."""
        return self.source.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ModelEvent:
    """A model version registered in a workspace, by anyone (a pipeline step, Studio, the SDK).

    Read tolerantly, as the evidence requires: `modelName` or `ModelName`, the version as a
    string or an integer, and the subject (or, in one SDK's CloudEvent, the source) as the
    fallback for both."""

    id: str
    type: str
    source: str
    subject: str
    time: str | None
    model_name: str
    model_version: str
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)
    schema: Schema = "eventgrid"

    @property
    def workspace(self) -> str | None:
        """The workspace name, when the topic is the workspace's ARM id."""
        head, _, name = self.source.rstrip("/").rpartition("/")
        return name if head.lower().endswith("/workspaces") else None


@dataclass(frozen=True)
class OnlineTarget:
    """An online endpoint, or one of its deployments, as an ARM id names it."""

    endpoint: str
    deployment: str | None = None


@dataclass(frozen=True)
class ResourceWriteEvent:
    """An ARM write (PUT, PATCH) of an online endpoint or deployment, from the resource group's
    system topic.

    Only a hint that the resource changed: one operation raises several, tied by
    `correlation_id` (`distinct_writes` keeps one), and nothing says whether they come when the
    write is accepted or when it ends, so the resource's `provisioningState` is read before
    anything is decided. `status` is `data.status` as sent, which the REST spec's examples show
    as "Succeeded" in Failure and Cancel events too; the event type says how the write went."""

    id: str
    type: str
    subject: str  # the resource's ARM id
    resource_uri: str | None
    correlation_id: str | None
    operation_name: str | None
    status: str | None
    time: str | None
    source: str = ""  # the topic: the resource group's ARM id
    schema: Schema = "eventgrid"

    @property
    def outcome(self) -> Outcome:
        """How the write went, by the event type (Success, Failure, Cancel)."""
        return _WRITE_OUTCOMES[self.type]

    def target_in(self, workspace_id: str) -> OnlineTarget | None:
        """The endpoint or deployment written, if it belongs to this workspace (its ARM id)."""
        return online_target(self.subject, workspace_id)


@dataclass(frozen=True)
class SecretEvent:
    """A Key Vault secret's event: which vault, which secret, and the version it is about (absent
    in some hand-made deliveries: the bridge decides from the vault's state, not from this)."""

    id: str
    type: str
    vault: str  # the vault's name
    name: str  # the secret's name (also the event's subject)
    version: str | None
    time: str | None = None
    schema: Schema = "eventgrid"

    @property
    def near_expiry(self) -> bool:
        """Whether it asks for a rotation: near expiry, or already expired."""
        return self.type in (SECRET_NEAR_EXPIRY, SECRET_EXPIRED)


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


@dataclass(frozen=True)
class Malformed:
    """An event that cannot be read. It is recorded with its reason; the rest of its batch goes on.

    Event Grid never retries a 400, so refusing a whole batch for one bad event would lose the
    good ones beside it.
    """

    index: int
    reason: str
    raw: Any
    id: str | None = None


Parsed = JobEvent | ModelEvent | ResourceWriteEvent | SecretEvent | Ignored | Validation


def workspace_resource_id(subscription_id: str, resource_group: str, workspace: str) -> str:
    """A workspace's ARM id, as `online_target` and the templates write it."""
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace}"
    )


def online_target(resource_id: str, workspace_id: str) -> OnlineTarget | None:
    """The online endpoint or deployment of this workspace that `resource_id` names, or None for
    any other resource (another workspace's, a batch endpoint, a storage account, a sub-resource).

    Both are ARM ids, compared case-insensitively as ARM compares them; the names are returned
    as `resource_id` spells them. Raises `ValueError` when `workspace_id` is no workspace's id."""
    workspace = _WORKSPACE.match(workspace_id.strip())
    if workspace is None:
        raise ValueError(f"not an Azure ML workspace's ARM id: {workspace_id!r}")
    found = _ONLINE_TARGET.match(resource_id.strip())
    if found is None or _workspace_key(found) != _workspace_key(workspace):
        return None
    return OnlineTarget(found["endpoint"], found["deployment"])


def distinct_writes(events: Iterable[ResourceWriteEvent]) -> list[ResourceWriteEvent]:
    """One event per operation and resource: the first of each `correlation_id` and resource,
    in the order given. ARM raises several events for one long-running write (and Event Grid
    may deliver each twice); reading the resource once per operation is enough. An event
    without a correlation id stands alone (by its id)."""
    seen: set[tuple[str, str]] = set()
    kept: list[ResourceWriteEvent] = []
    for event in events:
        operation = event.correlation_id.casefold() if event.correlation_id else f"id:{event.id}"
        key = (operation, event.subject.strip().rstrip("/").casefold())
        if key not in seen:
            seen.add(key)
            kept.append(event)
    return kept


def _workspace_key(match: re.Match[str]) -> tuple[str, str, str]:
    return (match["subscription"].casefold(), match["group"].casefold(),
            match["workspace"].casefold())  # fmt: skip


def parse_body(body: bytes | str) -> list[Any]:
    """A delivery body as a list of items (Event Grid array, CloudEvents single or batch).

    Raises `InvalidEvent` only when the body holds no event object at all; single items that are
    not objects are judged, like every event, by `parse_events`.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"body is not JSON: {exc}") from exc
    items = data if isinstance(data, list) else [data]
    if not items:
        raise InvalidEvent("body is an empty array: expected at least one event")
    if not any(isinstance(item, dict) for item in items):
        raise InvalidEvent("body holds no JSON object: expected Event Grid events or CloudEvents")
    return items


def parse_event(raw: Mapping[str, Any]) -> Parsed:
    """One event object, in either schema, as a `JobEvent`, a `ModelEvent`, a
    `ResourceWriteEvent`, an `Ignored`, or a `Validation`.

    Envelope and `data` keys are matched case-insensitively (real RunCompleted payloads spell
    `RunTags`, RunStatusChanged spells `runTags`); a `data` that arrives as a JSON string is
    decoded. Anything else out of shape raises `InvalidEvent` naming the field.
    """
    fields = _Keys(raw)
    if "specversion" in fields:
        return _parse(fields, schema="cloudevents", type_key="type", source_key="source",
                      time_key="time")  # fmt: skip
    if "eventtype" in fields:
        return _parse(fields, schema="eventgrid", type_key="eventType", source_key="topic",
                      time_key="eventTime")  # fmt: skip
    raise InvalidEvent(
        "not an event: expected 'eventType' (Event Grid schema) or 'specversion' (CloudEvents)"
    )


def parse_events(body: bytes | str) -> list[Parsed | Malformed]:
    """A whole delivery body, each event judged alone: a bad one becomes `Malformed`."""
    parsed: list[Parsed | Malformed] = []
    for index, raw in enumerate(parse_body(body)):
        if not isinstance(raw, dict):
            parsed.append(Malformed(index, f"event [{index}] is not a JSON object", raw))
            continue
        try:
            parsed.append(parse_event(raw))
        except InvalidEvent as exc:
            event_id = raw.get("id") if isinstance(raw.get("id"), str) else None
            parsed.append(Malformed(index, f"event [{index}]: {exc}", raw, event_id))
    return parsed


class _Keys:
    """A mapping read case-insensitively; an exact spelling wins over another casing."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._exact = raw
        self._folded: dict[str, Any] = {}
        for key, value in raw.items():
            folded = str(key).lower()
            if folded not in self._folded or self._folded[folded] in (None, "", {}):
                self._folded[folded] = value

    def __contains__(self, key: str) -> bool:
        return key.lower() in self._folded

    def get(self, key: str) -> Any:
        if key in self._exact and self._exact[key] not in (None, "", {}):
            return self._exact[key]
        return self._folded.get(key.lower())


def _parse(raw: _Keys, *, schema: Schema, type_key: str, source_key: str, time_key: str) -> Parsed:
    event_id = _text(raw, "id")
    event_type = _text(raw, type_key)
    source, subject, time = (_envelope(raw, key) for key in (source_key, "subject", time_key))
    if event_type == SUBSCRIPTION_VALIDATION:
        data = raw.get("data")
        code = data.get("validationCode") if isinstance(data, dict) else None
        if not isinstance(code, str) or not code:
            raise InvalidEvent("SubscriptionValidationEvent without data.validationCode")
        return Validation(code)
    if event_type == MODEL_REGISTERED:
        return _model_event(raw, event_id, event_type, source=source, subject=subject, time=time,
                            schema=schema)  # fmt: skip
    if event_type in RESOURCE_WRITE_TYPES:
        return _resource_write(raw, event_id, event_type, source=source, subject=subject,
                               time=time, schema=schema)  # fmt: skip
    if event_type in SECRET_EVENT_TYPES:
        return _secret_event(raw, event_id, event_type, subject=subject, time=time, schema=schema)
    if event_type not in RUN_EVENT_TYPES:
        return Ignored(event_id, event_type, "not an Azure ML run event")
    data = _Keys(_data_object(raw.get("data"), f"{event_type} {event_id}"))
    job_name = data.get("runId")
    if not isinstance(job_name, str) or not job_name:
        raise InvalidEvent(f"{event_type} {event_id}: data.runId is missing")
    status = "Completed" if event_type == RUN_COMPLETED else data.get("runStatus")
    if status is not None and not isinstance(status, str):
        raise InvalidEvent(f"{event_type} {event_id}: data.runStatus must be a string")
    tags = data.get("runTags") or {}
    if not isinstance(tags, dict):
        raise InvalidEvent(f"{event_type} {event_id}: data.runTags must be an object")
    return JobEvent(
        id=event_id,
        type=event_type,
        source=source or "",
        subject=subject or "",
        time=time,
        job_name=job_name,
        status=normalise_status(status) if status else None,
        experiment_name=_optional_text(data, "experimentName"),
        experiment_id=_optional_text(data, "experimentId"),
        tags={str(key): str(value) for key, value in tags.items() if value is not None},
        schema=schema,
    )


def _model_event(
    raw: _Keys, event_id: str, event_type: str, *, source: str | None, subject: str | None,
    time: str | None, schema: Schema,
) -> ModelEvent:  # fmt: skip
    what = f"{event_type} {event_id}"
    data = _Keys(_data_object(raw.get("data"), what))
    named = next((found for text in (subject, source) if text
                  and (found := _MODEL_SUBJECT.match(text))), None)  # fmt: skip
    name = _optional_text(data, "modelName") or (named["name"] if named else None)
    version = data.get("modelVersion")
    if isinstance(version, bool) or not isinstance(version, str | int | type(None)):
        raise InvalidEvent(f"{what}: data.modelVersion must be a string or an integer")
    version = str(version) if version not in (None, "") else (named["version"] if named else None)
    if not name or not version:
        raise InvalidEvent(f"{what}: no model name and version in data or subject")
    return ModelEvent(
        id=event_id, type=event_type, source=source or "", subject=subject or "", time=time,
        model_name=name, model_version=version, tags=_strings(data, "modelTags", what),
        properties=_strings(data, "modelProperties", what), schema=schema,
    )  # fmt: skip


def _resource_write(
    raw: _Keys, event_id: str, event_type: str, *, source: str | None, subject: str | None,
    time: str | None, schema: Schema,
) -> ResourceWriteEvent | Ignored:  # fmt: skip
    what = f"{event_type} {event_id}"
    if not subject:
        raise InvalidEvent(f"{what}: 'subject' is missing: it names the resource written")
    if _ONLINE_TARGET.match(subject.strip()) is None:
        return Ignored(event_id, event_type, NOT_AN_ONLINE_TARGET)
    data = _Keys(_data_object(raw.get("data"), what))
    resource_uri, correlation_id, operation_name, status = (
        _data_text(data, key, what)
        for key in ("resourceUri", "correlationId", "operationName", "status")
    )
    return ResourceWriteEvent(
        id=event_id, type=event_type, subject=subject, resource_uri=resource_uri,
        correlation_id=correlation_id, operation_name=operation_name, status=status, time=time,
        source=source or "", schema=schema,
    )  # fmt: skip


def _data_text(data: _Keys, key: str, what: str) -> str | None:
    """An optional string of `data`: absent is fine, anything but a string is malformed."""
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidEvent(f"{what}: data.{key} must be a string, not {type(value).__name__}")
    return value or None


def _strings(data: _Keys, key: str, what: str) -> dict[str, str]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise InvalidEvent(f"{what}: data.{key} must be an object")
    return {str(k): str(v) for k, v in value.items() if v is not None}


def _secret_event(
    raw: _Keys, event_id: str, event_type: str, *, subject: str | None, time: str | None,
    schema: Schema,
) -> SecretEvent:  # fmt: skip
    data = _Keys(_data_object(raw.get("data"), f"{event_type} {event_id}"))
    name = _optional_text(data, "ObjectName") or subject
    if not name:
        raise InvalidEvent(f"{event_type} {event_id}: neither data.ObjectName nor a subject")
    vault = _optional_text(data, "VaultName") or ""
    return SecretEvent(event_id, event_type, vault, name, _optional_text(data, "Version"),
                       time, schema)  # fmt: skip


def _data_object(data: Any, what: str) -> Mapping[str, Any]:
    """`data` as an object; some publishers send it as a JSON string."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise InvalidEvent(f"{what}: 'data' is a string but not JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise InvalidEvent(f"{what}: 'data' must be an object")
    return data


def _text(raw: _Keys, key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"'{key}' is missing or not a string")
    return value


def _envelope(raw: _Keys, key: str) -> str | None:
    """An optional envelope field: absent is fine; anything but a string is a malformed event."""
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidEvent(f"'{key}' must be a string, not {type(value).__name__}")
    return value or None


def _optional_text(raw: _Keys, key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) and value else None
