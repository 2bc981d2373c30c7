"""Azure ML's job events, shaped as the chosen profile says a workspace sends them, published to
the local Event Grid topic in the Event Grid schema or as CloudEvents 1.0. Also ModelRegistered
(the workspace's topic) and the resource write events of the resource group's system topic,
which the local topic carries to the same webhook."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from bridge.events import MODEL_REGISTERED, RUN_COMPLETED, RUN_STATUS_CHANGED, Schema
from bridge.local.azureml.profiles import DOCUMENTED, Profile
from bridge.local.event_grid import EventGridTopic

TENANT_ID = "00000000-0000-0000-0000-000000000000"  # the emulator's Entra tenant, as events name it
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

    def model_registered(
        self, name: str, version: str, tags: dict[str, Any], properties: dict[str, Any]
    ) -> None:
        """Publish ModelRegistered for a model version, in the profile's shape (maybe none)."""
        shape = self.profile.model_registered
        if shape == "none":
            return
        subject = f"models/{name}:{version}"
        if shape == "docs":  # the docs page: PascalCase, ModelVersion an integer
            number: int | str = int(version) if version.isdigit() else version
            data = {"ModelName": name, "ModelVersion": number, "ModelTags": dict(tags),
                    "ModelProperties": dict(properties)}  # fmt: skip
            self._send(self.workspace_id, subject, MODEL_REGISTERED, data, "Z")
        else:  # the SDK test suites: camelCase, the version a string
            data = {"modelName": name, "modelVersion": version, "modelTags": dict(tags),
                    "modelProperties": dict(properties)}  # fmt: skip
            self._send(self.workspace_id, subject, MODEL_REGISTERED, data, "+00:00")

    def resource_written(
        self,
        event_type: str,
        *,
        resource_id: str,
        operation_name: str,
        correlation_id: str,
        status: str,
    ) -> None:
        """Publish one `Microsoft.Resources.ResourceWrite*` on the resource group's system topic,
        shaped after the REST spec's examples (dataVersion "2", no httpRequest on a write)."""
        scope = resource_id.split("/providers/", 1)[0]  # /subscriptions/{sub}/resourceGroups/{rg}
        subscription = scope.split("/")[2]
        data = {
            "authorization": {"scope": resource_id, "action": operation_name,
                              "evidence": {"role": "Contributor"}},
            "claims": {"appid": "bridge-local", "appidacr": "2", "ver": "1.0",
                       "http://schemas.microsoft.com/identity/claims/tenantid": TENANT_ID},
            "correlationId": correlation_id,
            "resourceProvider": "Microsoft.MachineLearningServices",
            "resourceUri": resource_id,
            "operationName": operation_name,
            "status": status,
            "subscriptionId": subscription,
            "tenantId": TENANT_ID,
        }  # fmt: skip
        self._send(scope, resource_id, event_type, data, "Z", data_version="2")

    def _publish(self, job_name: str, event_type: str, data: dict[str, Any], zone: str) -> None:
        subject = f"experiments/{data['experimentId']}/runs/{job_name}"
        self._send(self.workspace_id, subject, event_type, data, zone)

    def _send(  # noqa: PLR0917 - the envelope's fields, in its order
        self,
        source: str,
        subject: str,
        event_type: str,
        data: dict[str, Any],
        zone: str,
        data_version: str | None = None,
    ) -> None:
        now = _timestamp(self.profile, zone)
        event_id = str(uuid.uuid4())
        if self.schema == "cloudevents":
            event = {
                "specversion": "1.0",
                "id": event_id,
                "source": source,
                "type": event_type,
                "subject": subject,
                "time": now,
                "data": data,
            }
        else:
            version = self.profile.data_version if data_version is None else data_version
            event = {"id": event_id, "topic": source, "subject": subject,
                     "eventType": event_type, "eventTime": now, "data": data,
                     "dataVersion": version, "metadataVersion": "1"}  # fmt: skip
        self.topic.publish(event)


def _timestamp(profile: Profile, zone: str) -> str:
    now = datetime.now(UTC)
    if profile.time_style == "azure":  # .NET's round-trip format: 7 fractional digits
        return now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0" + zone
    return now.isoformat().replace("+00:00", "Z")
