"""Event Grid's dead-lettering, locally: an undeliverable event is written to a blob container the
way Event Grid writes it, so `bridge replay` reads the same blobs here as in Azure.

Event Grid names each blob `<SUBSCRIPTION NAME IN UPPER CASE>/<year>/<month>/<day>/<hour>/<guid>
.json` (date and hour in UTC, not zero-padded) and writes a JSON array of the events, each with
`deadLetterReason`, `deliveryAttempts`, `lastDeliveryOutcome`, `lastHttpStatusCode`, `publishTime`
and `lastDeliveryAttemptTime` added beside the event's own fields.
"""

from __future__ import annotations

import json
import uuid
from contextlib import suppress
from datetime import UTC, datetime

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient

from bridge.local.event_grid import Delivery

CONTAINER = "eventgrid-deadletter"  # as infra/main.bicep names it
SUBSCRIPTION = "bridge-terminal-job-events"  # as infra/modules/eventgrid-subscription.bicep does
_OUTCOMES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 413: "PayloadTooLarge"}


class DeadLetterContainer:
    def __init__(self, connection_string: str, container: str = CONTAINER) -> None:
        self.container = ContainerClient.from_connection_string(connection_string, container)
        with suppress(ResourceExistsError):
            self.container.create_container()

    def write(self, delivery: Delivery) -> str:
        now = datetime.now(UTC)
        last = delivery.attempts[-1] if delivery.attempts else ""
        status = int(last) if last.isdigit() else None
        refused = status in _OUTCOMES
        dead = {
            **delivery.event,
            "deadLetterReason": (
                "UndeliverableDueToHttp" + _OUTCOMES[status] if refused and status
                else "MaxDeliveryAttemptsExceeded"
            ),
            "deliveryAttempts": len(delivery.attempts),
            "lastDeliveryOutcome": _OUTCOMES.get(status or 0, last or "Unknown"),
            "lastHttpStatusCode": status or 0,
            "publishTime": now.isoformat().replace("+00:00", "Z"),
            "lastDeliveryAttemptTime": now.isoformat().replace("+00:00", "Z"),
        }  # fmt: skip
        hour = f"{now.year}/{now.month}/{now.day}/{now.hour}"  # not zero-padded, as Event Grid
        name = f"{SUBSCRIPTION.upper()}/{hour}/{uuid.uuid4()}.json"
        self.container.upload_blob(name, json.dumps([dead]).encode())
        return name

    def close(self) -> None:
        self.container.close()
