"""Azure Functions glue: each function turns its binding's object into one call of the core.

Return means done (Service Bus completes the message; Event Grid counts a success); raising a
`TransientError` means retry (Service Bus redelivers, then dead-letters; Event Grid retries for
up to 24 h). Permanent failures are recorded by the core and return normally.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import azure.functions as func

from bridge import health as health_checks
from bridge.audit import TraceContext
from bridge.composition import runtime, webhook_gate
from bridge.errors import InvalidEvent
from bridge.events import JobEvent, ModelEvent, ResourceWriteEvent, SecretEvent, parse_event
from bridge.reconcile import Reconciler
from bridge.retention import Retention
from bridge.settings import Settings
from bridge.webhook import answer

if TYPE_CHECKING:
    from bridge.service import Bridge, Report

log = logging.getLogger("bridge.functions")


def on_submission(message: func.ServiceBusMessage) -> None:
    submit_message(runtime(), message.get_body(), message.message_id,
                   message.application_properties)  # fmt: skip


def submit_message(
    bridge: Bridge, body: bytes, message_id: str | None, properties: Mapping[Any, Any] | None
) -> Report:
    """One Service Bus message to the core, as the trigger hands it over: its id (or, lacking
    one, its body's hash) and the sender's `traceparent` property. The local dev host's trigger
    calls this too, with the message the SDK received."""
    message_id = message_id or hashlib.sha256(body).hexdigest()
    report = bridge.submit(body, message_id, TraceContext.of_message(properties))
    log.info("submission %s: %s %s", message_id, report.result, report.detail)
    return report


def on_azureml_event(event: func.EventGridEvent) -> None:
    raw = _event_grid_dict(event)
    try:
        parsed = parse_event(raw)
    except InvalidEvent as exc:
        # Retrying a malformed event for 24 h cannot fix it: record it and answer success.
        runtime().reject_event(event.id, str(exc), raw)
        return
    if isinstance(parsed, JobEvent | ModelEvent | ResourceWriteEvent | SecretEvent):
        report = runtime().receive(parsed)
        log.info("event %s: %s %s", event.id, report.result, report.detail)


def on_key_vault_event(event: func.EventGridEvent) -> None:
    """Key Vault's system topic: the signing key's SecretNearExpiry rotates it. Parsed and handled
    as `on_azureml_event` does any event; a function of its own so that its subscription, filter
    and failures read apart from Azure ML's."""
    on_azureml_event(event)


def reconcile(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.info("reconcile timer is past due; sweeping now")
    Reconciler(runtime()).sweep()


def retain(timer: func.TimerRequest) -> None:
    days = Settings.from_env(os.environ).ledger_retention_days
    Retention(runtime().ledger, days=days).run()


def events_webhook(request: func.HttpRequest) -> func.HttpResponse:
    reply = answer(
        request.method, dict(request.headers), request.get_body(), runtime, webhook_gate()
    )
    return func.HttpResponse(
        reply.content(),
        status_code=reply.status,
        headers=dict(reply.headers),
        mimetype="application/json",
    )


def health(request: func.HttpRequest) -> func.HttpResponse:
    status, body = health_checks.report(
        Settings.from_env(os.environ), os.environ, ledger=lambda: runtime().ledger
    )
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def _event_grid_dict(event: func.EventGridEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "eventType": event.event_type,
        "subject": event.subject,
        "topic": event.topic,
        "eventTime": event.event_time.isoformat() if event.event_time else None,
        "data": event.get_json(),
        "dataVersion": event.data_version,
    }
