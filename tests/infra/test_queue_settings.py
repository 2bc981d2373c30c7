"""The local Service Bus trigger and queue are the deployed ones: `TriggerOptions.from_host_json()`
is host.json's `extensions.serviceBus`, and `QueueOptions.from_bicep()` (a regular-expression
reader, so that the bridge needs no Bicep parser at run time) is what tree-sitter-bicep reads from
infra/modules/servicebus.bicep. The running stack's queue is checked against them in
tests/integration/test_trigger.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bridge.local.trigger import (
    HOST_JSON,
    SERVICEBUS_BICEP,
    QueueOptions,
    TriggerOptions,
    iso_duration_seconds,
)

from .bicep_types import declarations, literal_int, literal_string, object_literal, parse

QUEUE_TYPE = "Microsoft.ServiceBus/namespaces/queues"
# What TriggerOptions reads: a setting host.json gains must be read locally too (or said here).
TRIGGER_KEYS = {
    "autoCompleteMessages", "maxConcurrentCalls", "maxAutoLockRenewalDuration", "prefetchCount",
}  # fmt: skip


# --- host.json --------------------------------------------------------------------------------


def hhmmss(text: str) -> float:
    hours, minutes, seconds = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_the_local_trigger_options_are_host_jsons() -> None:
    service_bus = json.loads(HOST_JSON.read_text())["extensions"]["serviceBus"]
    assert set(service_bus) <= TRIGGER_KEYS, set(service_bus) - TRIGGER_KEYS
    assert TriggerOptions.from_host_json() == TriggerOptions(
        max_concurrent_calls=service_bus["maxConcurrentCalls"],
        max_auto_lock_renewal_seconds=hhmmss(service_bus["maxAutoLockRenewalDuration"]),
        auto_complete=service_bus["autoCompleteMessages"],
        prefetch_count=service_bus["prefetchCount"],
    )


def host_json(tmp_path: Path, service_bus: dict[str, Any]) -> Path:
    path = tmp_path / "host.json"
    path.write_text(json.dumps({"version": "2.0", "extensions": {"serviceBus": service_bus}}))
    return path


def test_trigger_options_take_the_extensions_defaults_where_host_json_is_silent(
    tmp_path: Path,
) -> None:
    # https://learn.microsoft.com/azure/azure-functions/functions-bindings-service-bus#hostjson-settings
    assert TriggerOptions.from_host_json(host_json(tmp_path, {})) == TriggerOptions(
        max_concurrent_calls=16, max_auto_lock_renewal_seconds=300.0, auto_complete=True,
        prefetch_count=0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("service_bus", "message"),
    [
        ({"autoCompleteMessages": False}, "autoCompleteMessages is false"),
        ({"maxAutoLockRenewalDuration": "5 minutes"}, "is not hh:mm:ss"),
        ({"maxAutoLockRenewalDuration": "PT5M"}, "is not hh:mm:ss"),
    ],
)
def test_trigger_options_refuse_what_the_local_trigger_cannot_honour(
    tmp_path: Path, service_bus: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TriggerOptions.from_host_json(host_json(tmp_path, service_bus))


# --- infra/modules/servicebus.bicep -----------------------------------------------------------


def queue_properties(source: bytes) -> dict[str, Any]:
    """The literal properties of the file's one queue resource, as tree-sitter-bicep reads them:
    strings, ints and booleans; an expression is read as None."""
    [queue] = [d for d in declarations(parse(source).named_children) if d.type_name == QUEUE_TYPE]
    assert queue.body is not None
    [properties] = [e.value for e in object_literal(queue.body).entries if e.key == "properties"]
    values: dict[str, Any] = {}
    for entry in object_literal(properties).entries:
        value = entry.value
        if value.type == "boolean":
            values[str(entry.key)] = value.text == b"true"
            continue
        text = literal_string(value)
        values[str(entry.key)] = text if text is not None else literal_int(value)
    return values


def tree_sitter_options(source: bytes) -> QueueOptions:
    """QueueOptions as read from the parse tree, with Service Bus's 10-minute default window."""
    found = queue_properties(source)
    window = None
    if found.get("requiresDuplicateDetection"):
        window = iso_duration_seconds(found.get("duplicateDetectionHistoryTimeWindow") or "PT10M")
    return QueueOptions(
        iso_duration_seconds(found["lockDuration"]), found["maxDeliveryCount"], window
    )


def test_the_local_queue_options_are_the_bicep_queues() -> None:
    source = SERVICEBUS_BICEP.read_bytes()
    properties = queue_properties(source)
    # Literals, so that the deployed values are known before deployment.
    assert isinstance(properties["lockDuration"], str)
    assert isinstance(properties["maxDeliveryCount"], int)
    assert QueueOptions.from_bicep() == tree_sitter_options(source)
    assert QueueOptions.from_bicep() == QueueOptions(60.0, 10, 3600.0)


# Edits of the real file the regex reader must follow exactly as the parser does, or refuse.
FOLLOWED = [
    ("lockDuration: 'PT1M'", "lockDuration: 'PT45S'"),
    ("maxDeliveryCount: 10", "maxDeliveryCount: 3 // fewer retries"),
    ("requiresDuplicateDetection: true", "requiresDuplicateDetection: false"),
    ("    duplicateDetectionHistoryTimeWindow: 'PT1H'\n", ""),
    ("lockDuration: 'PT1M'", "// lockDuration: 'PT5M' was too long\n    lockDuration: 'PT1M'"),
]
REFUSED = [
    ("lockDuration: 'PT1M'", "lockDuration: lock"),
    ("maxDeliveryCount: 10", "maxDeliveryCount: deliveries"),
    ("lockDuration: 'PT1M'", "lockDuration: 'one minute'"),
]


def edited(old: str, new: str) -> bytes:
    text = SERVICEBUS_BICEP.read_text()
    assert text.count(old) == 1, old
    return text.replace(old, new).encode()


@pytest.mark.parametrize(("old", "new"), FOLLOWED)
def test_the_regex_reader_follows_an_edit_as_the_parser_does(
    tmp_path: Path, old: str, new: str
) -> None:
    source = edited(old, new)
    path = tmp_path / "servicebus.bicep"
    path.write_bytes(source)
    assert QueueOptions.from_bicep(path) == tree_sitter_options(source)


@pytest.mark.parametrize(("old", "new"), REFUSED)
def test_the_regex_reader_refuses_what_is_no_literal_duration_or_count(
    tmp_path: Path, old: str, new: str
) -> None:
    path = tmp_path / "servicebus.bicep"
    path.write_bytes(edited(old, new))
    with pytest.raises(ValueError):
        QueueOptions.from_bicep(path)


# --- ISO 8601 durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT1M", 60.0), ("PT45S", 45.0), ("PT1H", 3600.0), ("P1D", 86400.0),
        ("PT1H30M", 5400.0), ("P1DT2H3M4.5S", 93784.5), ("PT0.5S", 0.5), (" PT5M ", 300.0),
    ],
)  # fmt: skip
def test_iso_duration_seconds(text: str, seconds: float) -> None:
    assert iso_duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "1M", "PT1X", "P1W", "PT-1S", "00:01:00", "pt1m"])
def test_iso_duration_seconds_refuses_what_is_no_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not an ISO 8601 duration"):
        iso_duration_seconds(text)


def test_the_lock_is_held_as_long_as_an_invocation_may_run() -> None:
    """The trigger renews the queue's lock while on_submission runs, up to
    maxAutoLockRenewalDuration: that must cover the function's timeout, or an invocation still
    within it could lose its lock and its message be delivered a second time meanwhile."""
    trigger, queue = TriggerOptions.from_host_json(), QueueOptions.from_bicep()
    timeout = hhmmss(json.loads(HOST_JSON.read_text())["functionTimeout"])
    assert math.isfinite(trigger.max_auto_lock_renewal_seconds)
    assert queue.lock_duration_seconds < trigger.max_auto_lock_renewal_seconds
    assert trigger.max_auto_lock_renewal_seconds >= timeout
