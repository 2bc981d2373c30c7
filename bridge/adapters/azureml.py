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
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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
from bridge.operations import RegisterModel
from bridge.ports import CreatedJob, JobOutput, ModelVersion

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

CLOUD_NAME = "BridgeLocal"
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

    def register_model(self, registration: RegisterModel) -> ModelVersion:
        """Register a model version: one synchronous call (no version given: the next one). A
        job's output is named `azureml://jobs/<job>/outputs/<output>`, which Azure ML resolves."""
        from azure.ai.ml.entities import Model

        source = registration.from_job
        path = (
            f"azureml://jobs/{source.job}/outputs/{source.output}" if source is not None
            else registration.path
        )  # fmt: skip
        model = Model(
            name=registration.name,
            version=registration.version,
            type=registration.type,
            path=path,
            description=registration.description,
            tags=dict(registration.tags),
            properties=dict(registration.properties),
        )
        action = f"registering model {registration.name}"
        with (
            self._audited("models.create_or_update", registration.name),
            _translated_errors(action),
        ):
            registered = self._ml_client().models.create_or_update(model)
        return ModelVersion(str(registered.name), str(registered.version), str(registered.id))

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

    def _new_client(self) -> Any:
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
            self.workspace,
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
