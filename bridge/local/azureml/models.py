"""The emulator's models: the part of `workspaces/{ws}/models` that azure-ai-ml's
`models.create_or_update` and `models.get` call, answered as the SDK needs (docs/azure-behaviour.md,
"Beyond jobs"):

- `GET models/{name}/versions?$orderBy=createdtime desc&$top=1`: the newest version, or none;
- `GET models/{name}`: the container, with `latestVersion` and `nextVersion` (404 before the
  first version), which the SDK reads when no version is given;
- `PUT models/{name}/versions/{version}`: one synchronous write, 201 when new and 200 when it
  replaces a version; the answer carries `properties.flavors`, without which the SDK fails;
- `GET models/{name}/versions/{version}`.

A version must have a `modelUri`; one the emulator can see is kept as it was sent (the SDK
rewrites a short `azureml://datastores/...` path to the long form itself).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

JOB_OUTPUT = re.compile(r"^azureml://jobs/(?P<job>[^/]+)/outputs/(?P<output>[^/]+)/?$")
MODELS_ROUTE = re.compile(
    r"^/models/(?P<name>[^/]+)(?:/versions(?:/(?P<version>[^/]+))?)?$", re.IGNORECASE
)


@dataclass
class RegisteredModel:
    """One model version as the emulator holds it."""

    name: str
    version: str
    properties: dict[str, Any]
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


@dataclass(frozen=True)
class ModelAnswer:
    status: int
    body: dict[str, Any]


class Models:
    """Every model version of one emulated workspace, thread-safe."""

    def __init__(
        self,
        workspace_id: str,
        on_registered: Callable[[RegisteredModel], object] | None = None,
        has_job: Callable[[str], bool] | None = None,
    ) -> None:
        self.workspace_id = workspace_id
        # A version from `azureml://jobs/<job>/outputs/<output>` needs that job in the workspace.
        self.has_job = has_job
        self.on_registered = on_registered  # told of every version PUT (ModelRegistered)
        self._lock = threading.Lock()
        self._versions: dict[str, dict[str, RegisteredModel]] = {}  # lower-case name -> versions

    def get(self, name: str, version: str) -> RegisteredModel | None:
        with self._lock:
            return self._versions.get(name.lower(), {}).get(version)

    def handle(self, method: str, path: str, body: Any) -> ModelAnswer | None:
        """The answer to a request under `models/`, or None when `path` is not one."""
        route = MODELS_ROUTE.match(path)
        if route is None:
            return None
        name, version = route["name"], route["version"]
        listing = path.rstrip("/").lower().endswith("/versions")
        if method == "PUT" and version:
            return self._put(name, version, body)
        if method == "GET" and version:
            found = self.get(name, version)
            if found is None:
                return _error(404, f"model {name}:{version} not found")
            return ModelAnswer(200, self._resource(found))
        if method == "GET" and listing:
            return ModelAnswer(200, {"value": [self._resource(m) for m in self._newest(name)]})
        if method == "GET":
            return self._container(name)
        return _error(405, f"{method} is not supported on {path}")

    def _put(self, name: str, version: str, body: Any) -> ModelAnswer:
        properties = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(properties, dict) or not properties.get("modelUri"):
            return _error(400, "a model version needs properties.modelUri")
        source = JOB_OUTPUT.match(str(properties["modelUri"]))
        if source is not None and self.has_job is not None and not self.has_job(source["job"]):
            return _error(400, f"modelUri names the output of job {source['job']}, not found")
        with self._lock:
            versions = self._versions.setdefault(name.lower(), {})
            existed = version in versions
            model = RegisteredModel(name, version, dict(properties))
            versions[version] = model
        if self.on_registered is not None:
            self.on_registered(model)
        return ModelAnswer(200 if existed else 201, self._resource(model))

    def _newest(self, name: str) -> list[RegisteredModel]:
        with self._lock:
            versions = list(self._versions.get(name.lower(), {}).values())
        return sorted(versions, key=lambda m: m.created_at, reverse=True)[:1]

    def _container(self, name: str) -> ModelAnswer:
        with self._lock:
            versions = list(self._versions.get(name.lower(), {}))
        if not versions:
            return _error(404, f"model {name} not found")
        numbers = [int(v) for v in versions if v.isdigit()]
        latest = str(max(numbers)) if numbers else versions[-1]
        return ModelAnswer(200, {
            "id": f"{self.workspace_id}/models/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/models",
            "properties": {"latestVersion": latest,
                           "nextVersion": str(max(numbers, default=0) + 1),
                           "isArchived": False, "description": None, "tags": {}},
        })  # fmt: skip

    def _resource(self, model: RegisteredModel) -> dict[str, Any]:
        properties = version_properties(model.properties)
        return {
            "id": f"{self.workspace_id}/models/{model.name}/versions/{model.version}",
            "name": model.version,
            "type": "Microsoft.MachineLearningServices/workspaces/models/versions",
            "properties": properties,
            "systemData": {"createdAt": model.created_at, "createdBy": "bridge-emulator"},
        }


def version_properties(sent: dict[str, Any]) -> dict[str, Any]:
    """A model version's `properties` as Azure ML answers them (a workspace's or a registry's):
    what was sent over the defaults; `flavors` never null, or azure-ai-ml fails."""
    properties = {
        "description": None, "tags": {}, "properties": {}, "isAnonymous": False,
        "isArchived": False, "modelType": "custom_model", "flavors": {}, "jobName": None,
        **sent,
        "provisioningState": "Succeeded",
    }  # fmt: skip
    if properties.get("flavors") is None:
        properties["flavors"] = {}
    return properties


def _error(status: int, message: str) -> ModelAnswer:
    code = {400: "UserError", 404: "UserError", 405: "MethodNotAllowed"}.get(status, "Error")
    return ModelAnswer(status, {"error": {"code": code, "message": message}})
