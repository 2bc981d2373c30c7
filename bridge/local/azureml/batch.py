"""The emulator's batch endpoints: what azure-ai-ml's `batch_endpoints.invoke` calls, answered as
the SDK needs (docs/azure-behaviour.md, "Beyond jobs"):

- `GET batchEndpoints/{name}` (ARM, api-version 2023-10-01): the endpoint, whose `scoringUri`
  points back at the emulator's own HTTPS host, on a data-plane path (`SCORING_ROUTE`);
- `GET batchEndpoints/{name}/deployments`: listed by the SDK when a deployment is named;
- `POST` to the scoring URI, with a bearer token for Azure ML's audience, the deployment in the
  `azureml-model-deployment` header (or the endpoint's default): a pipeline job named as the body
  says, which the workspace runs and publishes like any other job (`BatchRun`).

Endpoints are seeded by a test or the demo (`add_endpoint`); there is no write API. A deployment
seeded with `fails=True` runs its jobs to Failed. A second invocation under a job name that exists
is refused with 409 (what Azure answers is unverified).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ENDPOINTS_ROUTE = re.compile(
    r"^/batchEndpoints/(?P<endpoint>[^/]+)(?:/deployments(?:/(?P<deployment>[^/]+))?)?$",
    re.IGNORECASE,
)
# Azure's scoring URI is https://<endpoint>.<region>.inference.ml.azure.com/jobs; here it is a path
# on the emulator's own host, so that the same certificate serves it.
SCORING_ROUTE = re.compile(r"^/inference/batchEndpoints/(?P<endpoint>[^/]+)/jobs$", re.IGNORECASE)
DEPLOYMENT_HEADER = "azureml-model-deployment"
_INPUT_TYPES = {"urifolder": "uri_folder", "urifile": "uri_file", "mltable": "mltable"}


@dataclass(frozen=True)
class BatchAnswer:
    status: int
    body: dict[str, Any] | None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchRun:
    """The job one invocation starts: the workspace admits it like a PUT of `body`."""

    name: str
    body: dict[str, Any]
    outcome: str  # the terminal status it reaches: Completed, or Failed for a failing deployment


@dataclass(frozen=True)
class Invocation:
    """One scoring request as it arrived, for tests to assert on."""

    endpoint: str
    deployment: str | None  # the header, as sent
    audience: str | None  # the bearer token's `aud`
    repeatability_id: str | None
    body: Any


@dataclass
class BatchEndpoint:
    name: str
    deployments: dict[str, bool]  # name -> whether its jobs fail
    default_deployment: str | None
    outputs: tuple[str, ...]


class BatchEndpoints:
    """The batch endpoints of one emulated workspace, thread-safe."""

    def __init__(self, workspace_id: str) -> None:
        self.workspace_id = workspace_id
        self.invocations: list[Invocation] = []
        self._lock = threading.Lock()
        self._endpoints: dict[str, BatchEndpoint] = {}  # lower-case name -> endpoint

    def add_endpoint(
        self,
        name: str,
        deployments: Iterable[str] = ("default",),
        *,
        default_deployment: str | None = None,
        failing: Iterable[str] = (),
        outputs: Iterable[str] = ("score",),
    ) -> None:
        """Hold a batch endpoint with these deployments (the first is the default unless named);
        jobs of a deployment in `failing` end Failed; every job declares `outputs`."""
        names = list(deployments)
        failing = set(failing)
        endpoint = BatchEndpoint(
            name,
            {deployment: deployment in failing for deployment in names},
            default_deployment or (names[0] if names else None),
            tuple(outputs),
        )
        with self._lock:
            self._endpoints[name.lower()] = endpoint

    def handle(self, method: str, rest: str, base_url: str) -> BatchAnswer | None:
        """The answer to an ARM request under `batchEndpoints/`, or None when `rest` is not one."""
        route = ENDPOINTS_ROUTE.match(rest)
        if route is None:
            return None
        if method != "GET":
            return _error(405, "MethodNotAllowed", f"{method} is not supported on {rest}")
        endpoint = self._endpoint(route["endpoint"])
        if endpoint is None:
            return _error(404, "UserError", f"batch endpoint {route['endpoint']} not found")
        deployment = route["deployment"]
        if deployment and deployment not in endpoint.deployments:
            return _error(404, "UserError", f"deployment {deployment} not found")
        if deployment:
            return BatchAnswer(200, self._deployment_resource(endpoint, deployment))
        if rest.lower().rstrip("/").endswith("/deployments"):
            listed = [self._deployment_resource(endpoint, name) for name in endpoint.deployments]
            return BatchAnswer(200, {"value": listed})
        return BatchAnswer(200, self._endpoint_resource(endpoint, base_url))

    def invoke(
        self, endpoint_name: str, headers: Mapping[str, str], body: Any
    ) -> BatchRun | BatchAnswer:
        """The job a scoring POST starts, or the refusal (`headers` have lower-case names)."""
        deployment_header = headers.get(DEPLOYMENT_HEADER)
        with self._lock:
            self.invocations.append(
                Invocation(
                    endpoint_name,
                    deployment_header,
                    _audience(headers.get("authorization", "")),
                    headers.get("repeatability_request-id"),
                    body,
                )
            )
        endpoint = self._endpoint(endpoint_name)
        if endpoint is None:
            return _error(404, "UserError", f"batch endpoint {endpoint_name} not found")
        deployment = deployment_header or endpoint.default_deployment
        if deployment is None or deployment not in endpoint.deployments:
            return _error(400, "UserError", f"deployment {deployment} not found on {endpoint_name}")
        job = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(job, dict) or not isinstance(job.get("name"), str):
            return _error(400, "UserError", "properties.name (the job's name) is required here")
        return BatchRun(
            job["name"], self._job_body(endpoint, deployment, job),
            "Failed" if endpoint.deployments[deployment] else "Completed",
        )  # fmt: skip

    def _endpoint(self, name: str) -> BatchEndpoint | None:
        with self._lock:
            return self._endpoints.get(name.lower())

    def _job_body(
        self, endpoint: BatchEndpoint, deployment: str, job: dict[str, Any]
    ) -> dict[str, Any]:
        """A pipeline job, as Azure ML runs a model deployment's invocation: no tags (invoke takes
        none), the inputs as sent, one output per declared name with its path filled."""
        name = str(job["name"])
        experiment = (job.get("properties") or {}).get("experimentName") or endpoint.name
        outputs = {
            output: {
                "jobOutputType": "uri_folder",
                "mode": "ReadWriteMount",
                "uri": f"azureml://datastores/workspaceblobstore/paths/{endpoint.name}/{name}/"
                f"{output}/",
            }
            for output in endpoint.outputs
        }
        return {"properties": {
            "jobType": "Pipeline", "experimentName": experiment, "displayName": name,
            "inputs": _job_inputs(job.get("inputData")), "outputs": outputs, "tags": {},
            "properties": {"azureml.batchrun": "true", "azureml.deploymentname": deployment,
                           "azureml.endpointname": endpoint.name},
        }}  # fmt: skip

    def _endpoint_resource(self, endpoint: BatchEndpoint, base_url: str) -> dict[str, Any]:
        scoring = f"{base_url.rstrip('/')}/inference/batchEndpoints/{endpoint.name}/jobs"
        return {
            "id": f"{self.workspace_id}/batchEndpoints/{endpoint.name}",
            "name": endpoint.name,
            "type": "Microsoft.MachineLearningServices/workspaces/batchEndpoints",
            "location": "local",
            "tags": {},
            "properties": {"authMode": "AADToken", "scoringUri": scoring,
                           "swaggerUri": None, "provisioningState": "Succeeded",
                           "defaults": {"deploymentName": endpoint.default_deployment}},
        }  # fmt: skip

    def _deployment_resource(self, endpoint: BatchEndpoint, name: str) -> dict[str, Any]:
        return {
            "id": f"{self.workspace_id}/batchEndpoints/{endpoint.name}/deployments/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/batchEndpoints/deployments",
            "location": "local",
            "tags": {},
            "properties": {"provisioningState": "Succeeded", "compute": "batch-cluster"},
        }


def _job_inputs(sent: Any) -> dict[str, Any]:
    """The invocation's `inputData` as the job reports its inputs: azure-ai-ml sends a data input
    as `{"jobInputType": "UriFolder", "uri": ...}` (the batch API's casing) and a literal as its
    bare value; a job names types in snake case and holds literals as strings."""
    inputs: dict[str, Any] = {}
    for name, value in (sent or {}).items() if isinstance(sent, dict) else ():
        if isinstance(value, dict):
            kind = str(value.get("jobInputType") or "uri_folder")
            inputs[name] = {**value, "jobInputType": _INPUT_TYPES.get(kind.lower(), kind)}
        else:
            literal = json.dumps(value) if isinstance(value, bool) else str(value)
            inputs[name] = {"jobInputType": "literal", "value": literal}
    return inputs


def _audience(authorization: str) -> str | None:
    """The `aud` of a JWT bearer token, unverified (the local credential's tokens are unsigned)."""
    token = authorization.removeprefix("Bearer ").strip()
    parts = token.split(".")
    if len(parts) < 2:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    audience = claims.get("aud") if isinstance(claims, dict) else None
    return audience if isinstance(audience, str) else None


def _error(status: int, code: str, message: str) -> BatchAnswer:
    return BatchAnswer(status, {"error": {"code": code, "message": message}})
