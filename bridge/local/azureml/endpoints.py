"""The emulator's managed online endpoints and deployments: ARM long-running writes as azure-ai-ml
sends them (docs/azure-behaviour.md, "Beyond jobs"), and the resource write events they raise.

- `PUT onlineEndpoints/{name}` (the SDK's api-version 2022-02-01-preview) and
  `PUT onlineEndpoints/{ep}/deployments/{name}` (2023-04-01-preview) answer 201 for a new resource
  and 200 for an update, with `provisioningState` Creating or Updating and an
  `Azure-AsyncOperation` header to an operation status the emulator serves (InProgress, then
  Succeeded or Failed). `online_seconds` later the resource is Succeeded or Failed.
- Answers are shaped after the REST spec's ManagedOnlineDeployment examples (stable 2025-09-01):
  a deployment carries `scaleSettings`, `requestSettings` and the probes, which the SDK needs.
- A deployment on an endpoint that does not exist is a 404; an endpoint's `traffic` naming a
  deployment it does not have is a 400, and so (the emulator's rule, unverified) is one that does
  not add up to 100.
- A deployment whose model (an ARM id of this workspace) the workspace does not hold is accepted
  and then Failed: ARM accepts the write and the model is resolved while provisioning (the
  emulator's choice; azure-ai-ml builds the model's ARM id locally and never reads the model).
- Why a deployment failed is where ARM keeps it: in the operation status's `error`; and in the
  deployment's container log (`POST .../deployments/{name}/getLogs`), where a caller that did
  not wait for the operation can read it.
- A write that overtakes one still in progress ends the earlier operation Canceled.

Resource write events (`Microsoft.Resources.ResourceWrite*`) go out when the profile says:
at completion, by outcome (`documented`), a Success when the write is accepted (`observed`), or
never; `arm_events_per_write` of them, sharing one correlationId.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.events import RESOURCE_WRITE_CANCEL, RESOURCE_WRITE_FAILURE, RESOURCE_WRITE_SUCCESS
from bridge.local.azureml.models import Models
from bridge.local.azureml.publisher import JobEventPublisher

TERMINAL = frozenset({"Succeeded", "Failed", "Canceled"})
_ENDPOINTS_ROUTE = re.compile(
    r"^/onlineEndpoints(?:/(?P<endpoint>[^/]+)(?:/(?P<keys>listKeys)"
    r"|/deployments(?:/(?P<deployment>[^/]+)(?P<logs>/getLogs)?)?)?)?$",
    re.IGNORECASE,
)
OPERATION_ROUTE = re.compile(
    r"^/subscriptions/[^/]+/providers/Microsoft\.MachineLearningServices/locations/[^/]+/"
    r"mfeOperationsStatus/oe:(?P<id>[^/]+)$",
    re.IGNORECASE,
)
_MODEL_ID = re.compile(r"^(?P<workspace>.+)/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$")
_OPERATION_API_VERSION = "2023-04-01-preview"
_DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    "endpointComputeType": "Managed",
    "scaleSettings": {"scaleType": "Default"},
    "requestSettings": {"maxQueueWait": "PT0.5S", "requestTimeout": "PT5S",
                        "maxConcurrentRequestsPerInstance": 1},
    "livenessProbe": {"failureThreshold": 30, "successThreshold": 1, "timeout": "PT2S",
                      "period": "PT10S", "initialDelay": "PT10S"},
    "readinessProbe": {"failureThreshold": 30, "successThreshold": 1, "timeout": "PT2S",
                       "period": "PT10S", "initialDelay": "PT10S"},
    "appInsightsEnabled": False,
    "egressPublicNetworkAccess": "Enabled",
    "properties": {},
}  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class OnlineAnswer:
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Operation:
    """One accepted write: what the operation status URL reports."""

    id: str
    resource: OnlineResource
    correlation_id: str
    status: str = "InProgress"  # InProgress, Succeeded, Failed, Canceled
    error: dict[str, str] | None = None
    started: str = field(default_factory=_now)
    ended: str | None = None


@dataclass
class OnlineResource:
    """An endpoint (`deployment` None) or a deployment, as the last accepted PUT left it."""

    endpoint: str
    deployment: str | None
    body: dict[str, Any]
    state: str
    created_at: str = field(default_factory=_now)
    operation: Operation | None = None
    log: list[str] = field(default_factory=list)


class OnlineEndpoints:
    """Every online endpoint and deployment of one emulated workspace, thread-safe."""

    def __init__(
        self,
        workspace_id: str,
        *,
        models: Models,
        publisher: JobEventPublisher,
        base_url: Callable[[], str],
        online_seconds: float = 0.5,
    ) -> None:
        self.workspace_id = workspace_id
        self.online_seconds = online_seconds  # Creating/Updating -> Succeeded/Failed
        self._models = models
        self._publisher = publisher
        self._base_url = base_url
        self._changed = threading.Condition()
        self._resources: dict[tuple[str, str | None], OnlineResource] = {}  # lower-case names
        self._operations: dict[str, Operation] = {}
        self._failures: dict[tuple[str, str | None], str] = {}  # the next write ends Failed
        self._timers: dict[str, threading.Timer] = {}  # by operation id

    # -- what tests and the local stack use ------------------------------------------------------

    def fail_endpoint(self, name: str, message: str) -> None:
        """The endpoint's next accepted write ends Failed, with this error message."""
        with self._changed:
            self._failures[(name.lower(), None)] = message

    def fail_deployment(self, endpoint: str, name: str, message: str) -> None:
        """The deployment's next accepted write ends Failed, with this error message."""
        with self._changed:
            self._failures[(endpoint.lower(), name.lower())] = message

    def endpoint(self, name: str) -> dict[str, Any] | None:
        """The endpoint as a GET answers it, or None."""
        with self._changed:
            found = self._resources.get((name.lower(), None))
            return None if found is None else self._resource(found)

    def deployment(self, endpoint: str, name: str) -> dict[str, Any] | None:
        """The deployment as a GET answers it, or None."""
        with self._changed:
            found = self._resources.get((endpoint.lower(), name.lower()))
            return None if found is None else self._resource(found)

    def wait_for(
        self,
        endpoint: str,
        deployment: str | None = None,
        states: Collection[str] = TERMINAL,
        timeout: float = 5.0,
    ) -> str:
        """The resource's provisioningState once it is one of `states`; TimeoutError if not."""
        key = (endpoint.lower(), deployment.lower() if deployment else None)
        with self._changed:
            reached = self._changed.wait_for(
                lambda: key in self._resources and self._resources[key].state in states, timeout
            )
            current = self._resources[key].state if key in self._resources else None
        if not reached or current is None:
            raise TimeoutError(f"{key} is {current or 'unknown'} after {timeout}s")
        return current

    def close(self) -> None:
        """Stop every write still in flight where it is."""
        with self._changed:
            timers, self._timers = list(self._timers.values()), {}
        for timer in timers:
            timer.cancel()

    # -- HTTP ------------------------------------------------------------------------------------

    def handle(self, method: str, rest: str, body: Any) -> OnlineAnswer | None:
        """The answer to a request under the workspace's `onlineEndpoints/`, or None."""
        route = _ENDPOINTS_ROUTE.match(rest)
        if route is None:
            return None
        endpoint, deployment = route["endpoint"], route["deployment"]
        listing = rest.rstrip("/").lower().endswith(("/deployments", "/onlineendpoints"))
        if route["keys"] and method == "POST":
            return self._keys(endpoint)
        if route["logs"] and method == "POST":
            return self._logs(endpoint, deployment, body)
        if method == "PUT" and deployment:
            return self._put_deployment(endpoint, deployment, body)
        if method == "PUT" and endpoint and not listing:
            return self._put_endpoint(endpoint, body)
        if method == "GET" and not route["keys"] and not route["logs"]:
            return self._get(endpoint, deployment, listing)
        return _error(405, "MethodNotAllowed", f"{method} is not supported on {rest}")

    def operation_status(self, method: str, path: str) -> OnlineAnswer | None:
        """The answer to a GET of an operation status URL, or None when `path` is not one."""
        route = OPERATION_ROUTE.match(path)
        if route is None or method != "GET":
            return None
        with self._changed:
            operation = self._operations.get(route["id"])
            if operation is None:
                return _error(404, "NotFound", f"operation {route['id']} not found")
            answer: dict[str, Any] = {
                "id": path,
                "name": operation.id,
                "status": operation.status,
                "startTime": operation.started,
            }
            if operation.ended:
                answer["endTime"] = operation.ended
            if operation.error:
                answer["error"] = dict(operation.error)
        headers = {"Retry-After": "1"} if operation.status == "InProgress" else {}
        return OnlineAnswer(200, answer, headers)

    def _get(self, endpoint: str | None, deployment: str | None, listing: bool) -> OnlineAnswer:
        with self._changed:
            if endpoint is None:
                found = [r for k, r in self._resources.items() if k[1] is None]
                return OnlineAnswer(200, {"value": [self._resource(r) for r in found]})
            parent = self._resources.get((endpoint.lower(), None))
            if parent is None:
                return _not_found(f"online endpoint {endpoint}")
            if deployment is None and listing:
                found = [r for k, r in self._resources.items() if k[0] == endpoint.lower() and k[1]]
                return OnlineAnswer(200, {"value": [self._resource(r) for r in found]})
            if deployment is None:
                return OnlineAnswer(200, self._resource(parent))
            resource = self._resources.get((endpoint.lower(), deployment.lower()))
            if resource is None:
                return _not_found(f"deployment {deployment} of online endpoint {endpoint}")
            return OnlineAnswer(200, self._resource(resource))

    def _put_endpoint(self, name: str, body: Any) -> OnlineAnswer:
        properties = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(properties, dict) or not properties.get("authMode"):
            return _error(400, "BadArgument", "an online endpoint needs properties.authMode")
        traffic = properties.get("traffic") or {}
        with self._changed:
            missing = sorted(d for d in traffic if (name.lower(), d.lower()) not in self._resources)
            if missing:
                return _error(400, "BadArgument", f"traffic names deployments that endpoint "
                              f"{name} does not have: {', '.join(missing)}")  # fmt: skip
            if traffic and sum(int(v) for v in traffic.values()) != 100:
                return _error(400, "BadArgument", "traffic must add up to 0 or 100")
            return self._accept((name.lower(), None), name, None, body)

    def _put_deployment(self, endpoint: str, name: str, body: Any) -> OnlineAnswer:
        properties = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(properties, dict) or not properties.get("endpointComputeType"):
            return _error(400, "BadArgument", "a deployment needs properties.endpointComputeType")
        with self._changed:
            parent = self._resources.get((endpoint.lower(), None))
            if parent is None:
                return _not_found(f"online endpoint {endpoint}")
            return self._accept((endpoint.lower(), name.lower()), parent.endpoint, name, body)

    def _accept(
        self, key: tuple[str, str | None], endpoint: str, deployment: str | None, body: Any
    ) -> OnlineAnswer:
        """Take the write (lock held): Creating or Updating now, its outcome `online_seconds`
        later, and the events the profile raises for it."""
        existing = self._resources.get(key)
        if existing is not None and existing.operation is not None:
            self._end(existing.operation, "Canceled", None)  # overtaken
        resource = OnlineResource(endpoint, deployment, dict(body),
                                  state="Updating" if existing else "Creating")  # fmt: skip
        if existing is not None:
            resource.created_at = existing.created_at
        operation = Operation(str(uuid.uuid4()), resource, correlation_id=str(uuid.uuid4()))
        resource.operation = operation
        self._resources[key] = resource
        self._operations[operation.id] = operation
        failure = self._failures.pop(key, None) or self._unresolved(resource)
        self._changed.notify_all()
        if self._publisher.profile.arm_events == "start":
            self._publish(operation, RESOURCE_WRITE_SUCCESS)
        timer = threading.Timer(self.online_seconds, self._complete, args=(operation, failure))
        timer.daemon = True
        self._timers[operation.id] = timer
        timer.start()
        status_url = (
            f"{self._base_url().rstrip('/')}/subscriptions/{self._subscription}/providers/"
            f"Microsoft.MachineLearningServices/locations/local/mfeOperationsStatus/"
            f"oe:{operation.id}?api-version={_OPERATION_API_VERSION}"
        )
        return OnlineAnswer(
            200 if existing else 201,
            self._resource(resource),
            {"Azure-AsyncOperation": status_url, "Retry-After": "1"},
        )

    def _unresolved(self, resource: OnlineResource) -> str | None:
        """Why the deployment cannot be provisioned from what the workspace holds, if it cannot."""
        model = str(resource.body["properties"].get("model") or "")
        found = _MODEL_ID.match(model)
        if resource.deployment is None or found is None:
            return None
        if found["workspace"].lower() != self.workspace_id.lower():
            return None  # another workspace's or a registry's: not the emulator's to check
        if self._models.get(found["name"], found["version"]) is None:
            return f"Model {found['name']}:{found['version']} was not found in the workspace."
        return None

    def _complete(self, operation: Operation, failure: str | None) -> None:
        with self._changed:
            self._timers.pop(operation.id, None)
            if operation.status != "InProgress":
                return  # overtaken by a later write
            if failure is None:
                self._end(operation, "Succeeded", None)
            else:
                self._end(operation, "Failed", failure)

    def _end(self, operation: Operation, status: str, message: str | None) -> None:
        """Settle the operation and its resource (lock held), and publish what the profile says."""
        operation.status = status
        operation.ended = _now()
        resource = operation.resource
        resource.state = status
        resource.operation = None
        if message is not None:
            code = "DeploymentFailed" if resource.deployment else "EndpointFailed"
            operation.error = {"code": code, "message": message}
            resource.log.append(f"{_now()} ERROR {message}")
        elif status == "Succeeded" and resource.deployment:
            resource.log.append(f"{_now()} INFO the inference server is ready")
        self._changed.notify_all()
        if self._publisher.profile.arm_events == "completion":
            event_type = {"Succeeded": RESOURCE_WRITE_SUCCESS, "Failed": RESOURCE_WRITE_FAILURE}
            self._publish(operation, event_type.get(status, RESOURCE_WRITE_CANCEL))

    def _publish(self, operation: Operation, event_type: str) -> None:
        resource = operation.resource
        nested = "onlineEndpoints/deployments" if resource.deployment else "onlineEndpoints"
        status = {RESOURCE_WRITE_SUCCESS: "Succeeded", RESOURCE_WRITE_FAILURE: "Failed"}
        for _ in range(self._publisher.profile.arm_events_per_write):
            self._publisher.resource_written(
                event_type,
                resource_id=self._id(resource),
                operation_name=f"Microsoft.MachineLearningServices/workspaces/{nested}/write",
                correlation_id=operation.correlation_id,
                status=status.get(event_type, "Canceled"),
            )

    def _keys(self, endpoint: str | None) -> OnlineAnswer:
        with self._changed:
            if endpoint is None or (endpoint.lower(), None) not in self._resources:
                return _not_found(f"online endpoint {endpoint}")
        seed = uuid.uuid5(uuid.NAMESPACE_URL, f"{self.workspace_id}/{endpoint.lower()}").hex
        return OnlineAnswer(200, {"primaryKey": seed, "secondaryKey": seed[::-1]})

    def _logs(self, endpoint: str | None, deployment: str | None, body: Any) -> OnlineAnswer:
        tail = body.get("tail") if isinstance(body, dict) else None
        with self._changed:
            resource = self._resources.get((str(endpoint).lower(), str(deployment).lower()))
            if resource is None:
                return _not_found(f"deployment {deployment} of online endpoint {endpoint}")
            lines = resource.log[-tail:] if isinstance(tail, int) and tail > 0 else resource.log
        return OnlineAnswer(200, {"content": "\n".join(lines)})

    # -- resources as ARM answers them -----------------------------------------------------------

    @property
    def _subscription(self) -> str:
        return self.workspace_id.split("/")[2]

    def _id(self, resource: OnlineResource) -> str:
        own = f"{self.workspace_id}/onlineEndpoints/{resource.endpoint}"
        return own if resource.deployment is None else f"{own}/deployments/{resource.deployment}"

    def _resource(self, resource: OnlineResource) -> dict[str, Any]:
        body = resource.body
        sent = dict(body.get("properties") or {})
        if resource.deployment is None:
            host = f"https://{resource.endpoint.lower()}.local.inference.ml.azure.com"
            properties = {"description": None, "properties": {}, "traffic": {},
                          "mirrorTraffic": {}, "publicNetworkAccess": "Enabled", **sent,
                          "scoringUri": f"{host}/score", "swaggerUri": f"{host}/swagger.json",
                          "provisioningState": resource.state}  # fmt: skip
            kind = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
        else:
            given = {k: v for k, v in sent.items() if v is not None}
            properties = {**_DEPLOYMENT_DEFAULTS, **given, "provisioningState": resource.state}
            kind = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments"
        answer: dict[str, Any] = {
            "id": self._id(resource),
            "name": resource.deployment or resource.endpoint,
            "type": kind,
            "location": body.get("location") or "local",
            "tags": dict(body.get("tags") or {}),
            "kind": body.get("kind"),
            "identity": {"type": "SystemAssigned", "principalId": str(uuid.uuid5(
                uuid.NAMESPACE_URL, self._id(resource))), "tenantId": self._subscription},
            "properties": properties,
            "systemData": {"createdAt": resource.created_at, "createdBy": "bridge-emulator",
                           "createdByType": "Application", "lastModifiedAt": _now(),
                           "lastModifiedBy": "bridge-emulator",
                           "lastModifiedByType": "Application"},
        }  # fmt: skip
        if resource.deployment is not None:
            answer["sku"] = {"name": "Default", "tier": "Standard", "capacity": 1,
                             **(body.get("sku") or {})}  # fmt: skip
        return answer


def _not_found(what: str) -> OnlineAnswer:
    return OnlineAnswer(404, {"error": {"code": "UserError", "message": f"{what} not found",
                                        "innerError": {"code": "NotFound"}}})  # fmt: skip


def _error(status: int, code: str, message: str) -> OnlineAnswer:
    return OnlineAnswer(status, {"error": {"code": code, "message": message}})
