"""The emulator's Azure ML registries: what azure-ai-ml's `models.share` calls, answered as the SDK
needs (docs/azure-behaviour.md, "Beyond jobs"):

- registry discovery, `GET /registrymanagement/v1.0/registries/{registry}/discovery` on the
  cloud's `registry_discovery_endpoint`: where the registry lives, its `primaryRegionResource
  ProviderUri` being the emulator's own HTTPS host (404 for a registry that is not held);
- under that host's `mferp/managementfrontend` (api-version 2021-10-01-dataplanepreview):
  `GET .../registries/{registry}/models/{name}/versions/{version}` (the SDK's 404 check, and its
  final read), `GET .../models/{name}` (the container, with `nextVersion`), and
  `POST .../registries/{registry}/import`, which copies a workspace's model version (named by its
  `azureml://locations/<location>/workspaces/<workspace guid>/models/<name>/versions/<v>`
  asset id) at once and answers 202 with a `Location` that reads 200, with no body, when polled.

The copy keeps the source's model URI, type, description, tags and properties (the service copies
server-side; whether it keeps the tags is unverified). An import to a version that exists is
refused with 409.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.local.azureml.models import version_properties

DISCOVERY_ROUTE = re.compile(
    r"^/registrymanagement/v1\.0/registries/(?P<registry>[^/]+)/discovery$", re.IGNORECASE
)
REGISTRY_ROUTE = re.compile(
    r"^/mferp/managementfrontend/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
    r"Microsoft\.MachineLearningServices/registries/(?P<registry>[^/]+)(?P<rest>/.*)$",
    re.IGNORECASE,
)
OPERATION_ROUTE = re.compile(
    r"^/mferp/managementfrontend/subscriptions/[^/]+/providers/Microsoft\.MachineLearningServices/"
    r"locations/[^/]+/registryOperations/(?P<operation>[^/]+)$",
    re.IGNORECASE,
)
_MODEL_ROUTE = re.compile(
    r"^/models/(?P<name>[^/]+)(?P<versions>/versions(?:/(?P<version>[^/]+))?)?$", re.IGNORECASE
)
_SOURCE_ASSET = re.compile(
    r"^azureml://locations/[^/]+/workspaces/(?P<workspace>[^/]+)/models/(?P<name>[^/]+)/"
    r"versions/(?P<version>[^/]+)$"
)
API_VERSION = "2021-10-01-dataplanepreview"
RESOURCE_GROUP = "bridge-registries"


@dataclass(frozen=True)
class RegistryAnswer:
    status: int
    body: dict[str, Any] | None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class RegistryModel:
    """One model version as a registry holds it."""

    registry: str
    name: str
    version: str
    properties: dict[str, Any]  # modelUri, modelType, description, tags, properties
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def id(self) -> str:
        return f"azureml://registries/{self.registry}/models/{self.name}/versions/{self.version}"

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.properties.get("tags") or {})


# What a share copies from: (workspace guid, name, version) -> the version's properties, or None.
Source = Callable[[str, str, str], "dict[str, Any] | None"]


class Registries:
    """The registries the emulated workspace can share to, thread-safe."""

    def __init__(self, subscription_id: str, source: Source) -> None:
        self.subscription_id = subscription_id
        self._source = source
        self._lock = threading.Lock()
        self._models: dict[str, dict[tuple[str, str], RegistryModel]] = {}  # registry -> versions

    def add(self, name: str) -> None:
        """Hold an (empty) registry of this name."""
        with self._lock:
            self._models.setdefault(name.lower(), {})

    def get(self, registry: str, name: str, version: str) -> RegistryModel | None:
        with self._lock:
            return self._models.get(registry.lower(), {}).get((name.lower(), version))

    def handle(self, method: str, path: str, body: Any, base_url: str) -> RegistryAnswer | None:
        """The answer to a registry request (discovery or data plane), or None when `path` is
        not one."""
        if (found := DISCOVERY_ROUTE.match(path)) is not None and method == "GET":
            return self._discovery(found["registry"], base_url)
        if OPERATION_ROUTE.match(path) is not None and method == "GET":
            return RegistryAnswer(200, None)  # every import is done by the time it is polled
        found = REGISTRY_ROUTE.match(path)
        if found is None:
            return None
        registry, rest = found["registry"], found["rest"]
        with self._lock:
            known = registry.lower() in self._models
        if not known:
            return _error(404, "RegistryNotFound", f"registry {registry} not found")
        if method == "POST" and rest.lower() == "/import":
            return self._import(registry, body, base_url)
        model = _MODEL_ROUTE.match(rest)
        if model is not None and method == "GET" and model["version"]:
            return self._read(registry, model["name"], model["version"])
        if model is not None and method == "GET" and model["versions"]:
            return RegistryAnswer(200, {"value": self._newest(registry, model["name"])})
        if model is not None and method == "GET":
            return self._container(registry, model["name"])
        return _error(404, "NotFound", f"the emulator does not serve {method} {path}")

    def _discovery(self, registry: str, base_url: str) -> RegistryAnswer:
        with self._lock:
            known = registry.lower() in self._models
        if not known:
            return _error(404, "RegistryNotFound", f"registry {registry} not found")
        return RegistryAnswer(200, {
            "registryName": registry, "tenantId": "00000000-0000-0000-0000-000000000000",
            "primaryRegion": "local", "regions": ["local"],
            "subscriptionId": self.subscription_id, "resourceGroup": RESOURCE_GROUP,
            "workspaceName": None,
            "primaryRegionResourceProviderUri": base_url.rstrip("/") + "/",
        })  # fmt: skip

    def _import(self, registry: str, body: Any, base_url: str) -> RegistryAnswer:
        properties = body.get("properties") if isinstance(body, dict) else None
        source = _SOURCE_ASSET.match(str((properties or {}).get("sourceAssetId") or ""))
        if not isinstance(properties, dict) or source is None:
            return _error(400, "UserError", "properties.sourceAssetId must name a model version")
        copied = self._source(source["workspace"], source["name"], source["version"])
        if copied is None:
            return _error(404, "UserError", f"source asset {properties['sourceAssetId']} not found")
        name = str(properties.get("destinationName") or source["name"])
        version = str(properties.get("destinationVersion") or source["version"])
        with self._lock:
            versions = self._models[registry.lower()]
            if (name.lower(), version) in versions:
                return _error(409, "UserError", f"model {name}:{version} exists in {registry}")
            versions[(name.lower(), version)] = RegistryModel(registry, name, version, copied)
        location = (
            f"{base_url.rstrip('/')}/mferp/managementfrontend/subscriptions/"
            f"{self.subscription_id}/providers/Microsoft.MachineLearningServices/locations/local/"
            f"registryOperations/{uuid.uuid4()}?api-version={API_VERSION}"
        )
        return RegistryAnswer(202, None, {"Location": location, "Retry-After": "1"})

    def _read(self, registry: str, name: str, version: str) -> RegistryAnswer:
        found = self.get(registry, name, version)
        if found is None:
            return _error(404, "UserError", f"model {name}:{version} not found in {registry}")
        return RegistryAnswer(200, _resource(found))

    def _versions(self, registry: str, name: str) -> list[RegistryModel]:
        with self._lock:
            held = self._models[registry.lower()].items()
            return [model for (key, _), model in held if key == name.lower()]

    def _newest(self, registry: str, name: str) -> list[dict[str, Any]]:
        """`versions?$orderBy=createdtime desc&$top=1`, which the SDK asks before any write."""
        versions = sorted(self._versions(registry, name), key=lambda m: m.created_at)
        return [_resource(model) for model in versions[-1:]]

    def _container(self, registry: str, name: str) -> RegistryAnswer:
        versions = self._versions(registry, name)
        if not versions:
            return _error(404, "UserError", f"model {name} not found in {registry}")
        numbers = [int(model.version) for model in versions if model.version.isdigit()]
        return RegistryAnswer(200, {
            "id": f"azureml://registries/{registry}/models/{name}", "name": name,
            "properties": {"latestVersion": versions[-1].version,
                           "nextVersion": str(max(numbers, default=0) + 1), "tags": {}},
        })  # fmt: skip


def _resource(model: RegistryModel) -> dict[str, Any]:
    properties = version_properties(model.properties)
    return {
        "id": model.id,
        "name": model.version,
        "type": "Microsoft.MachineLearningServices/registries/models/versions",
        "properties": properties,
        "systemData": {"createdAt": model.created_at, "createdBy": "bridge-emulator"},
    }


def _error(status: int, code: str, message: str) -> RegistryAnswer:
    return RegistryAnswer(status, {"error": {"code": code, "message": message}})
