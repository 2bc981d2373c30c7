"""`Jobs` on Azure Machine Learning, with azure-ai-ml's `MLClient`.

`azure.ai.ml` costs over a second to import, so it is imported on first use, never at import time.
Failures are translated on azure-core's exception classes and status codes, never on message text:
network, 429 and 5xx are transient, 401 and 403 (and no token at all) block until an operator's
fix (a role assignment still propagating heals by itself), other 4xx are permanent, and the SDK's
own validation errors are an invalid submission.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from bridge import audit
from bridge.contracts import CommandJob, JobInput, Submission, YamlJob
from bridge.errors import (
    BlockedError,
    InvalidSubmission,
    PermanentError,
    TransientError,
    retry_after_seconds,
)
from bridge.operations import BatchInput, BatchScore, Deploy, RegisterModel, ShareModel
from bridge.ports import CreatedJob, JobOutput, ModelVersion, Provisioning

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

CLOUD_NAME = "BridgeLocal"
_LOG_LINES = 20  # of a failed deployment's log, read for the reason it failed
# Retry connection blips once, quickly; leave 429 and 5xx to the queue's redelivery, because
# azure-core would otherwise sleep for the whole Retry-After inside the function.
_RETRIES: dict[str, Any] = {
    "retry_total": 2,
    "retry_connect": 1,
    "retry_read": 1,
    "retry_status": 0,
    "retry_backoff_factor": 0.2,
    "retry_backoff_max": 2,
}


_INVOKE_LOCK = threading.Lock()  # see `batch_score`
_TRUST_LOCK = threading.Lock()
_TRUSTED: set[bytes] = set()  # the authorities trusted so far (see `_trust_process_wide`)


class AzureMLJobs:
    """The jobs of one Azure ML workspace (or of the local emulator, when `endpoint` is set)."""

    def __init__(
        self,
        *,
        subscription_id: str,
        resource_group: str,
        workspace: str,
        credential: TokenCredential,
        endpoint: str | None = None,
        ca_file: str | None = None,
        identity: str = "default credential",
    ) -> None:
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.workspace = workspace
        self.endpoint = endpoint
        self.ca_file = ca_file  # trust only this CA (the emulator's), not the machine's store
        self._credential = credential
        self.identity = identity  # what the audit trail names: a client id, never a token
        self._client: Any = None
        self._client_lock = threading.Lock()

    def create(self, submission: Submission, tags: Mapping[str, str]) -> CreatedJob:
        job = self._job_entity(submission, tags)
        try:
            with (
                self._audited("jobs.create_or_update", submission.id),
                _translated_errors(f"creating job {submission.id}"),
            ):
                created = self._ml_client().jobs.create_or_update(job)
        except PermanentError as refused:
            # A resent submission names a job that exists: that job is the answer. The service may
            # refuse the second PUT with 409 or 400, so look before giving up.
            if not _is_refused_put(refused):
                raise
            existing = self.find(submission.id)
            if existing is None:
                raise
            return existing
        return _created_job(created)

    # -- models ----------------------------------------------------------------------------------

    def register_model(
        self, registration: RegisterModel, version: str, tags: Mapping[str, str]
    ) -> ModelVersion:
        """Register exactly `version`: one synchronous PUT. A job's output is named
        `azureml://jobs/<job>/outputs/<output>`, which Azure ML resolves."""
        from azure.ai.ml.entities import Model

        source = registration.from_job
        path = (
            f"azureml://jobs/{source.job}/outputs/{source.output}" if source is not None
            else registration.path
        )  # fmt: skip
        model = Model(
            name=registration.name,
            version=version,
            type=registration.type,
            path=path,
            description=registration.description,
            tags={**registration.tags, **tags},
            properties=dict(registration.properties),
        )
        action = f"registering model {registration.name}:{version}"
        with (
            self._audited("models.create_or_update", registration.name),
            _translated_errors(action),
        ):
            registered = self._ml_client().models.create_or_update(model)
        return _model_version(registered)

    def model(self, name: str, version: str, registry: str | None = None) -> ModelVersion | None:
        if registry is not None:
            if self.ca_file:  # registry discovery ignores connection_verify (see share_model)
                _trust_process_wide(self.ca_file)
            return self._registry_model(registry, name, version)
        with (
            self._audited("models.get", name),
            _translated_errors(f"reading model {name}:{version}"),
        ):
            try:
                return _model_version(self._ml_client().models.get(name, version=version))
            except ResourceNotFoundError:
                return None

    def next_model_version(self, name: str) -> str:
        """The container's `nextVersion` ("1" before the first version): what azure-ai-ml itself
        reads when it registers without a version. The SDK has no public call for it (its public
        `models.list()` drops the field), so this asks the same generated operation its own
        `_get_next_version_from_container` asks: one `GET .../models/{name}`."""
        client = self._ml_client()
        with (
            self._audited("models.next_version", name),
            _translated_errors(f"reading model {name}"),
        ):
            try:
                container = client.models._model_container_operation.get(
                    name=name,
                    resource_group_name=self.resource_group,
                    workspace_name=self.workspace,
                )
            except ResourceNotFoundError:
                return "1"
        return str(container.properties.next_version)

    # -- online endpoints and deployments ----------------------------------------------------------

    # Writes are ARM long-running operations. azure-ai-ml's `begin_create_or_update` hands back a
    # poller whose thread starts polling at once and goes on until the write ends (minutes, for a
    # deployment), and neither method lets a caller opt out. So the entity is built with the SDK
    # and PUT through the generated operation the SDK itself calls, with `polling=False`: one
    # request, no thread; the outcome is read later. See docs/azure-behaviour.md, "Beyond jobs".

    def online_endpoint(self, name: str) -> Provisioning | None:
        """The endpoint: a GET of it and one of its deployments (the SDK's `get`)."""
        with (
            self._audited("online_endpoints.get", name),
            _translated_errors(f"reading online endpoint {name}"),
        ):
            try:
                found = self._ml_client().online_endpoints.get(name)
            except ResourceNotFoundError:
                return None
        return _provisioning(found, scoring_uri=found.scoring_uri, traffic=found.traffic)

    def start_endpoint(self, name: str, tags: Mapping[str, str]) -> None:
        """PUT the endpoint with key auth: a new one serves nothing; an existing one keeps its
        traffic and gets `tags` added to its own."""
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        with (
            self._audited("online_endpoints.begin_create_or_update", name),
            _translated_errors(f"creating online endpoint {name}"),
        ):
            client = self._ml_client()
            try:
                endpoint = client.online_endpoints.get(name)
                endpoint.tags = {**(endpoint.tags or {}), **tags}
            except ResourceNotFoundError:
                endpoint = ManagedOnlineEndpoint(name=name, auth_mode="key", tags=dict(tags))
            self._put_endpoint(client, endpoint)

    def online_deployment(self, endpoint: str, name: str) -> Provisioning | None:
        """The deployment; for a Failed one, the last lines of its log say why (ARM keeps the
        reason only in the operation status, which the bridge did not wait for)."""
        with (
            self._audited("online_deployments.get", name),
            _translated_errors(f"reading deployment {endpoint}/{name}"),
        ):
            client = self._ml_client()
            try:
                found = client.online_deployments.get(name, endpoint)
            except ResourceNotFoundError:
                return None
            provisioning = _provisioning(found)
            if provisioning.state == "Failed":
                return replace(provisioning, error=_log_tail(client, endpoint, name))
        return provisioning

    def start_deployment(self, deploy: Deploy, tags: Mapping[str, str]) -> None:
        """PUT the deployment (new or updated). The model, environment and code are named by ARM
        id, built as the SDK builds them: the model is not read first. 404 without the endpoint."""
        from azure.ai.ml.entities import CodeConfiguration, ManagedOnlineDeployment

        action = f"deploying {deploy.model_name}:{deploy.model_version} to {deploy.endpoint}"
        with (
            self._audited("online_deployments.begin_create_or_update", deploy.deployment),
            _translated_errors(action),
        ):
            client = self._ml_client()
            code = None
            if deploy.code is not None:
                code = CodeConfiguration(
                    code=self._asset_id(client, "codes", deploy.code),
                    scoring_script=deploy.scoring_script,
                )
            deployment = ManagedOnlineDeployment(
                name=deploy.deployment,
                endpoint_name=deploy.endpoint,
                model=self._asset_id(client, "models", deploy.model),
                instance_type=deploy.instance_type,
                instance_count=deploy.instance_count,
                environment=None if deploy.environment is None
                else self._asset_id(client, "environments", deploy.environment),
                code_configuration=code,
                tags={**deploy.tags, **tags},
            )  # fmt: skip
            client.online_deployments._online_deployment.begin_create_or_update(
                resource_group_name=self.resource_group,
                workspace_name=self.workspace,
                endpoint_name=deploy.endpoint,
                deployment_name=deploy.deployment,
                body=deployment._to_rest_object(location=self._location(client)),
                polling=False,
            )

    def start_traffic(
        self, endpoint: str, traffic: Mapping[str, int], tags: Mapping[str, str]
    ) -> None:
        """Read the endpoint and PUT it back whole with this traffic map, as the SDK does."""
        with (
            self._audited("online_endpoints.begin_create_or_update", endpoint),
            _translated_errors(f"setting the traffic of online endpoint {endpoint}"),
        ):
            client = self._ml_client()
            found = client.online_endpoints.get(endpoint)
            found.traffic = dict(traffic)
            found.tags = {**(found.tags or {}), **tags}
            self._put_endpoint(client, found)

    def _put_endpoint(self, client: Any, endpoint: Any) -> None:
        # As `online_endpoints.begin_create_or_update` does before its PUT: zero shares go.
        endpoint.traffic = {k: v for k, v in (endpoint.traffic or {}).items() if v}
        endpoint.mirror_traffic = {k: v for k, v in (endpoint.mirror_traffic or {}).items() if v}
        location = endpoint.location or self._location(client)
        client.online_endpoints._online_operation.begin_create_or_update(
            resource_group_name=self.resource_group,
            workspace_name=self.workspace,
            endpoint_name=endpoint.name,
            body=endpoint._to_rest_online_endpoint(location=location),
            polling=False,
        )

    def _location(self, client: Any) -> str:
        return str(client.workspaces.get(self.workspace).location)

    def _asset_id(self, client: Any, kind: str, reference: str) -> str:
        """The ARM id azure-ai-ml sends for `azureml:name:version` (built, not looked up), for
        `azureml:name@label` (an environment: looked up, as the SDK does), or an id as given."""
        if reference.startswith("azureml://"):  # a registry's asset: "azureml:" is its scheme
            return reference
        bare = reference.removeprefix("azureml:")
        if bare.startswith("/subscriptions/"):
            return bare
        name, at, label = bare.partition("@")
        if at and kind == "environments":
            return str(client.environments.get(name, label=label).id)
        name, colon, version = bare.partition(":")
        if not (colon and name and version) or "/" in bare:
            raise InvalidSubmission(f"{reference!r} must name an Azure ML asset: name:version")
        workspace_id = (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace}"
        )
        return f"{workspace_id}/{kind}/{name}/versions/{version}"

    # -- batch endpoints and registries ------------------------------------------------------------

    def batch_score(self, score: BatchScore, job_name: str) -> CreatedJob:
        """Invoke the batch endpoint: `GET batchEndpoints/{name}` (and, with a deployment, its
        deployments' list), then one POST to its scoring URI, whose answer is the job; the SDK
        keeps only its name and status, so one `jobs.get` adds its Studio URL and outputs (the
        invocation's answer stands if the job cannot be read yet). Invoke takes no tags: the job
        is found by its name. A resent invocation whose job exists is refused by the service
        (409 or 400), and that job is the answer."""
        try:
            with (
                self._audited("batch_endpoints.invoke", job_name),
                _translated_errors(f"invoking batch endpoint {score.endpoint} as {job_name}"),
            ):
                job = self._invoke(score, job_name)
        except PermanentError as refused:
            if not _is_refused_put(refused):
                raise
            existing = self.find(job_name)
            if existing is None:
                raise
            return existing
        status = getattr(job.status, "value", job.status)
        invoked = CreatedJob(
            name=str(job.name), status=None if status is None else str(status), studio_url=None
        )
        return self.find(job_name) or invoked

    def _invoke(self, score: BatchScore, job_name: str) -> Any:
        from azure.ai.ml import Input
        from azure.ai.ml.constants._endpoint import EndpointInvokeFields

        inputs = {
            name: Input(type=value.type, path=value.path) if isinstance(value, BatchInput)
            else value
            for name, value in score.inputs.items()
        }  # fmt: skip
        # azure-ai-ml builds an invocation's headers in one dict shared by the whole process
        # (`EndpointInvokeFields.DEFAULT_HEADER`) and only adds to it: a deployment named once is
        # sent with every later invocation that names none (seen with 1.35.2), concurrent
        # invocations mix their headers, and the bearer token stays in it. So invocations take
        # turns, and each starts and ends without those headers.
        shared = EndpointInvokeFields.DEFAULT_HEADER
        stale = (EndpointInvokeFields.MODEL_DEPLOYMENT, EndpointInvokeFields.AUTHORIZATION)
        with _INVOKE_LOCK:
            for header in stale:
                shared.pop(header, None)
            try:
                return self._ml_client().batch_endpoints.invoke(
                    endpoint_name=score.endpoint,
                    deployment_name=score.deployment,
                    inputs=inputs,
                    job_name=job_name,
                    experiment_name=score.experiment_name,
                )
            finally:
                for header in stale:
                    shared.pop(header, None)

    def share_model(self, share: ShareModel, tags: Mapping[str, str]) -> ModelVersion:
        """Copy the workspace's model version into the registry with `models.share`: registry
        discovery, then on the registry's host a GET of the target version (404 expected), the
        import (a long-running POST, polled), and a GET of the copy.

        azure-ai-ml's share sends no tags (its import body names only the source and the target),
        so the copy carries what the service copies from the source version; `tags` cannot be
        added here. A target version that exists already makes the SDK raise before any import;
        it is then read from the registry and returned, whoever put it there."""
        name, version = share.share_name or share.name, share.share_version or share.version
        action = (
            f"sharing model {share.name}:{share.version} to {share.registry} as {name}:{version}"
        )
        client = self._ml_client()
        if self.ca_file:
            _trust_process_wide(self.ca_file)
        try:
            with self._audited("models.share", share.name), _translated_errors(action):
                shared = client.models.share(
                    share.name, share.version, share_with_name=name, share_with_version=version,
                    registry_name=share.registry,
                )  # fmt: skip
        except InvalidSubmission:
            existing = self._registry_model(share.registry, name, version)
            if existing is None:
                raise
            return existing
        return _registry_version(share.registry, shared)

    def _registry_model(self, registry: str, name: str, version: str) -> ModelVersion | None:
        """The registry's model version, or None: through an MLClient of that registry."""
        with (
            self._audited("models.get", name),
            _translated_errors(f"reading model {name}:{version} in registry {registry}"),
        ):
            try:
                found = self._new_client(registry=registry).models.get(name, version=version)
            except ResourceNotFoundError:
                return None
        return _registry_version(registry, found)

    # -- jobs --------------------------------------------------------------------------------------

    def find(self, name: str) -> CreatedJob | None:
        with self._audited("jobs.get", name), _translated_errors(f"reading job {name}"):
            try:
                return _created_job(self._ml_client().jobs.get(name))
            except ResourceNotFoundError:
                return None

    def cancel(self, name: str) -> None:
        """Ask Azure ML to cancel the job; returns once the service has accepted the request."""
        with self._audited("jobs.begin_cancel", name), _translated_errors(f"canceling job {name}"):
            self._ml_client().jobs.begin_cancel(name).result()

    @contextmanager
    def _audited(self, operation: str, job: str) -> Iterator[None]:
        """One audit record per SDK operation, listing each HTTP request the SDK made for it."""
        with audit.call("azureml", operation, job, self.identity) as call, audit.requests_of(call):
            yield

    def _ml_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def _new_client(self, registry: str | None = None) -> Any:
        """A client of the workspace, or of one registry (which it discovers as it is built)."""
        from azure.ai.ml import MLClient

        # azure-ai-ml's import sets its own logger to INFO with its own stderr handler, so the
        # host's levels do not reach it: it would announce every experimental schema class and
        # "Proceeding with no tenant id" on each job read. Errors still show.
        logging.getLogger("azure.ai.ml").setLevel(logging.ERROR)
        cloud: dict[str, Any] = {}
        if self.ca_file:
            cloud["connection_verify"] = self.ca_file  # every sub-client of MLClient takes it
        if self.endpoint:
            url = self.endpoint.rstrip("/") + "/"
            cloud |= {
                # azure-ai-ml registers a cloud name once per process and silently keeps the first
                # metadata given for it: one name per endpoint, or a second emulator is never used.
                "cloud": f"{CLOUD_NAME}@{urlsplit(url).netloc}",
                "cloud_metadata": {
                    "azure_portal": url,
                    "resource_manager": url,
                    "active_directory": url,
                    "aml_resource_id": url,
                    "storage_endpoint": "core.windows.net",
                    "registry_discovery_endpoint": url,
                },
            }
        return MLClient(
            self._credential,
            self.subscription_id,
            self.resource_group,
            None if registry else self.workspace,
            registry_name=registry,
            show_progress=False,
            enable_telemetry=False,
            # azure-core's CustomHookPolicy calls this with every response, in the calling thread.
            raw_response_hook=_note_response,
            **cloud,
            **_RETRIES,
        )

    def _job_entity(self, submission: Submission, tags: Mapping[str, str]) -> Any:
        from azure.ai.ml.exceptions import MlException

        if submission.job is None:  # the service runs operations on their own calls
            raise InvalidSubmission(f"{submission.id} is an operation, not a job")
        try:
            if isinstance(submission.job, CommandJob):
                return _command(submission, submission.job, tags)
            return _loaded(submission, submission.job, tags)
        except MlException as exc:
            raise InvalidSubmission(f"job is invalid: {_validation_message(exc)}") from exc


def _command(submission: Submission, job: CommandJob, tags: Mapping[str, str]) -> Any:
    from azure.ai.ml import Input, Output, command

    return command(
        name=submission.id,
        experiment_name=submission.experiment_name,
        display_name=job.display_name,
        description=job.description,
        command=job.command,
        environment=job.environment,
        compute=job.compute,
        inputs={
            name: Input(type=value.type, path=value.path, mode=value.mode)
            if isinstance(value, JobInput)
            else value
            for name, value in job.inputs.items()
        },
        outputs={
            name: Output(type=value.type, path=value.path, mode=value.mode)
            for name, value in job.outputs.items()
        },
        environment_variables=dict(job.environment_variables),
        instance_count=job.instance_count,
        timeout=job.timeout_seconds,  # sent as limits.timeout (an ISO 8601 duration)
        tags={**job.tags, **tags},
    )


def _loaded(submission: Submission, job: YamlJob, tags: Mapping[str, str]) -> Any:
    from azure.ai.ml import load_job

    code = job.spec.get("code")
    if isinstance(code, str) and not code.startswith(("azureml:", "https://", "git+")):
        # The SDK would upload that folder from the Function App's own file system.
        raise InvalidSubmission(f"spec.code {code!r} is a local path; use an azureml: asset")
    try:
        entity = load_job(io.StringIO(yaml.safe_dump(job.spec)))
    except Exception as exc:  # load_job only parses: whatever it raises, the spec is at fault
        raise InvalidSubmission(f"spec is not a valid Azure ML job: {_spec_problems(exc)}") from exc
    entity.name = submission.id
    entity.experiment_name = submission.experiment_name
    entity.tags = {**(entity.tags or {}), **tags}
    return entity


def _model_version(model: Any) -> ModelVersion:
    return ModelVersion(
        name=str(model.name),
        version=str(model.version),
        id=str(model.id),
        tags={str(k): str(v) for k, v in (model.tags or {}).items()},
        properties={str(k): str(v) for k, v in (model.properties or {}).items()},
    )


def _registry_version(registry: str, model: Any) -> ModelVersion:
    """A registry's model version, with the id a registry asset is referred to by (the service's
    own `id` for it is not relied on)."""
    found = _model_version(model)
    uri = f"azureml://registries/{registry}/models/{found.name}/versions/{found.version}"
    return replace(found, id=uri)


def _trust_process_wide(ca_file: str) -> None:
    """Trust `ca_file` (the local emulator's authority) in addition to the usual roots, for every
    `requests` session of the process.

    azure-ai-ml builds the clients of a share (registry discovery, the registry's host) without
    the `connection_verify` given to MLClient, so nothing the adapter passes reaches them (seen
    with 1.35.2: the discovery fails with CERTIFICATE_VERIFY_FAILED; every other call, batch
    invocation included, honours `connection_verify`). requests reads `REQUESTS_CA_BUNDLE` on each
    request of a session that trusts the environment (azure-core's do), so it is pointed at a
    bundle of the roots it named before (or requests' own) plus this authority: nothing trusted
    before stops being trusted. Only a process given a `ca_file` (the local stack's
    `BRIDGE_AZUREML_CA_FILE`) is touched, and only once it shares; never in Azure."""
    authority = Path(ca_file).read_bytes()
    with _TRUST_LOCK:
        if authority in _TRUSTED:  # the content: a restarted emulator makes a new one in place
            return
        from requests.utils import DEFAULT_CA_BUNDLE_PATH

        base = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        roots = Path(base if base and Path(base).is_file() else DEFAULT_CA_BUNDLE_PATH)
        folder = Path(tempfile.gettempdir())
        bundle = folder / f"bridge-azureml-ca-{os.getpid()}-{len(_TRUSTED)}.pem"
        bundle.write_bytes(roots.read_bytes().rstrip() + b"\n" + authority)
        os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)
        _TRUSTED.add(authority)


def _provisioning(
    resource: Any, *, scoring_uri: str | None = None, traffic: Mapping[str, int] | None = None
) -> Provisioning:
    state = resource.provisioning_state
    return Provisioning(
        name=str(resource.name),
        state=str(getattr(state, "value", state)),
        tags={str(k): str(v) for k, v in (resource.tags or {}).items()},
        scoring_uri=scoring_uri,
        # The SDK lists every deployment with a zero share; Azure ML holds only the others.
        traffic={str(k): int(v) for k, v in (traffic or {}).items() if v},
    )


def _log_tail(client: Any, endpoint: str, name: str) -> str | None:
    try:
        log = str(client.online_deployments.get_logs(name, endpoint, lines=_LOG_LINES))
    except HttpResponseError:  # no log (the container never started): the state says enough
        return None
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return " ".join(lines[-3:]) or None


def _note_response(response: Any) -> None:
    request = response.http_request
    audit.note_request(request.method, request.url, int(response.http_response.status_code))


def _created_job(job: Any) -> CreatedJob:
    status = getattr(job.status, "value", job.status)
    # azure-ai-ml maps the resource's outputs.<name>.uri to Output.path, jobOutputType to .type.
    outputs = {
        str(name): JobOutput(
            type=None if output.type is None else str(output.type),
            uri=None if output.path is None else str(output.path),
        )
        for name, output in (getattr(job, "outputs", None) or {}).items()
        if output is not None
    }
    return CreatedJob(
        name=str(job.name),
        status=None if status is None else str(status),
        studio_url=job.studio_url,
        outputs=outputs,
    )


@contextmanager
def _translated_errors(action: str) -> Iterator[None]:
    from azure.ai.ml.exceptions import MlException

    try:
        yield
    except MlException as exc:
        # The SDK's own checks before any request (it re-raises a ValidationException as an
        # MlException): the job as submitted is wrong, and sending it again will not help.
        raise InvalidSubmission(f"{action}: {_validation_message(exc)}") from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientError(f"{action}: Azure ML unreachable ({type(exc).__name__})") from exc
    except ClientAuthenticationError as exc:
        # No token, or a 401/403: what an operator fixes (an identity, a role assignment, which
        # takes minutes to propagate after `azd up`), so it blocks and heals, never rejects.
        raise _refused(action, exc) from exc
    except HttpResponseError as exc:
        raise _classified(action, exc) from exc


def _is_refused_put(refused: PermanentError) -> bool:
    cause = refused.__cause__
    return isinstance(cause, HttpResponseError) and cause.status_code in (400, 409)


def _refused(action: str, exc: HttpResponseError) -> BlockedError:
    if exc.status_code == 403:
        return BlockedError(
            f"{action}: Azure ML answered 403 (the identity lacks a role on the workspace, or "
            f"its assignment is still propagating): {_service_message(exc)}",
            cause=BlockedError.PERMISSION,
        )
    return BlockedError(
        f"{action}: not authenticated to Azure ML: {_service_message(exc)}",
        cause=BlockedError.CREDENTIALS,
    )


def _classified(action: str, exc: HttpResponseError) -> PermanentError | TransientError:
    status = exc.status_code or 0
    if status in (401, 403):
        return _refused(action, exc)
    message = f"{action}: Azure ML answered {status}: {_service_message(exc)}"
    if status == 429 or status >= 500 or status == 0:
        return TransientError(message, retry_after=_retry_after(exc))
    return PermanentError(message)


def _service_message(exc: HttpResponseError) -> str:
    if exc.error is not None and exc.error.message:
        return f"{exc.error.code}: {exc.error.message}"
    return exc.reason or type(exc).__name__


def _validation_message(exc: Exception) -> str:
    # The SDK's message is a multi-line report; its first lines name the field and the problem.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:4]) or type(exc).__name__


def _spec_problems(exc: Exception) -> str:
    """`field: problem` pairs out of the SDK's schema report (JSON nested in JSON strings)."""
    messages = getattr(exc, "messages", None) or str(exc)
    problems = [p for where, text in _leaves(messages, "") for p in _problems_in(text, where)]
    return "; ".join(problems[:5]) or f"{type(exc).__name__}: {exc}"


def _problems_in(text: str, where: str) -> list[str]:
    start, end = text.find("{"), text.rfind("}")
    try:
        report = json.loads(text[start : end + 1]) if 0 <= start < end else None
    except json.JSONDecodeError:
        report = None
    if report is None:
        first_line = text.strip().splitlines()[0] if text.strip() else ""
        return [f"{where or 'spec'}: {first_line}"] if first_line else []
    if isinstance(report, dict) and isinstance(report.get("errors"), list):
        nested = [str(error.get("message")) for error in report["errors"]]
        return [p for message in nested for p in _problems_in(message, where)]
    return [f"{path or 'spec'}: {problem}" for path, problem in _leaves(report, where)]


def _leaves(node: Any, where: str) -> list[tuple[str, str]]:
    if isinstance(node, dict):
        paths = ((f"{where}.{key}".strip("."), value) for key, value in node.items())
        return [leaf for path, value in paths for leaf in _leaves(value, path)]
    if isinstance(node, list):
        return [leaf for item in node for leaf in _leaves(item, where)]
    return [(where, str(node))]


def _retry_after(exc: HttpResponseError) -> float | None:
    headers: Mapping[str, str] = getattr(exc.response, "headers", None) or {}
    return retry_after_seconds(headers.get("Retry-After"))
