"""Azure ML's job events, shaped as the chosen profile says a workspace sends them, published to
the local Event Grid topic in the Event Grid schema or as CloudEvents 1.0."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from bridge.events import RUN_COMPLETED, RUN_STATUS_CHANGED, Schema
from bridge.local.azureml.profiles import DOCUMENTED, Profile
from bridge.local.event_grid import EventGridTopic

_RUN_TYPES = {
    "Command": "azureml.scriptrun",
    "Pipeline": "azureml.PipelineRun",
    "Sweep": "hyperdrive",
}


class JobEventPublisher:
    def __init__(
        self,
        topic: EventGridTopic,
        workspace_id: str,
        *,
        profile: Profile = DOCUMENTED,
        schema: Schema = "eventgrid",
        status_case: Literal["title", "lower"] = "title",
    ) -> None:
        self.topic = topic
        self.workspace_id = workspace_id
        self.profile = profile
        self.schema = schema
        self.status_case = status_case

    def status_changed(
        self,
        *,
        job_name: str,
        job_type: str,
        experiment_id: str,
        experiment_name: str,
        tags: dict[str, Any],
        properties: dict[str, Any],
        status: str,
    ) -> None:
        """Publish what the workspace raises when a job reaches `status` (maybe nothing)."""
        profile = self.profile
        data: dict[str, Any] = {
            "experimentId": experiment_id,
            "experimentName": experiment_name,
            "runId": job_name,
            "runType": None if profile.time_style == "azure" else _RUN_TYPES.get(job_type),
            "runTags": dict(tags),
            "runProperties": dict(properties),
        }
        if status in profile.status_changed:
            cased = status if self.status_case == "title" else status.lower()
            self._publish(job_name, RUN_STATUS_CHANGED, {**data, "runStatus": cased}, "Z")
        if status == "Completed" and profile.run_completed:
            completed = {k: v for k, v in data.items() if k != "runTags"}
            completed[profile.run_completed_tags_key] = data["runTags"]
            self._publish(job_name, RUN_COMPLETED, completed, "+00:00")

    def _publish(self, job_name: str, event_type: str, data: dict[str, Any], zone: str) -> None:
        subject = f"experiments/{data['experimentId']}/runs/{job_name}"
        now = _timestamp(self.profile, zone)
        event_id = str(uuid.uuid4())
        if self.schema == "cloudevents":
            event = {
                "specversion": "1.0",
                "id": event_id,
                "source": self.workspace_id,
                "type": event_type,
                "subject": subject,
                "time": now,
                "data": data,
            }
        else:
            event = {"id": event_id, "topic": self.workspace_id, "subject": subject,
                     "eventType": event_type, "eventTime": now, "data": data,
                     "dataVersion": self.profile.data_version,
                     "metadataVersion": "1"}  # fmt: skip
        self.topic.publish(event)


def _timestamp(profile: Profile, zone: str) -> str:
    now = datetime.now(UTC)
    if profile.time_style == "azure":  # .NET's round-trip format: 7 fractional digits
        return now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0" + zone
    return now.isoformat().replace("+00:00", "Z")
