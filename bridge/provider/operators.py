"""The bridge's operators: each sends one submission to the bridge and finishes at once.

`SubmitAzureMLJobOperator` sends an Azure ML job; one operator per operation sends the rest of a
model's lifecycle (docs/lifecycle.md): `RegisterAzureMLModelOperator`,
`DeployAzureMLModelOperator`, `SetAzureMLTrafficOperator`, `InvokeAzureMLBatchEndpointOperator`,
`CancelAzureMLJobOperator` and `ShareAzureMLModelOperator`. The task puts one submission on the
submission queue and succeeds; it never waits for Azure ML. The outcome reaches Airflow later as
asset events (and DAG runs) posted by the bridge, so downstream DAGs schedule on the assets named
in `on_completed` / `on_failed` / `on_canceled` and read the result from the event's `extra`.

Cheap to import: the queue SDKs load inside `execute`, PyYAML when a job file is read.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, TypeVar

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from pydantic import ValidationError

from bridge.audit import TraceContext
from bridge.contracts import CommandJob, Origin, Submission, describe, job_name
from bridge.errors import ConfigurationError, InvalidSubmission, PermanentError
from bridge.operations import Cancel, Deploy, Operations, ShareModel
from bridge.provider import studio
from bridge.provider.links import (
    ENDPOINT_URL_XCOM_KEY,
    MODEL_URL_XCOM_KEY,
    STUDIO_URL_XCOM_KEY,
    AzureMLEndpointLink,
    AzureMLModelLink,
    AzureMLStudioLink,
)
from bridge.provider.senders import WORKSPACE_ID, sender_from_env

if TYPE_CHECKING:
    from airflow.sdk import Context

STUDIO_URL = studio.STUDIO + "/runs/{job_name}?wsid={workspace_id}"
TRACEPARENT_XCOM_KEY = "traceparent"

# Azure ML's data bindings (`${{inputs.lr}}`) would otherwise be read as Jinja expressions.
_AZUREML_BINDING = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)

JobArgument: TypeAlias = str | os.PathLike[str] | Mapping[str, Any] | CommandJob
AssetArgument: TypeAlias = "str | Asset"
Urls: TypeAlias = dict[str, str | None]
_Op = TypeVar("_Op", bound=Operations)

_ROUTE_FIELDS = ("trigger", "partition_key")


class AzureMLBridgeOperator(BaseOperator):  # type: ignore[misc,unused-ignore]
    """What every operator of the bridge shares: routes, where to send, and the sending.

    A subclass says what it asks for (`work`: a job or an operation) and which Studio pages it
    knows (`studio_urls`); this class builds the submission under the task instance's name,
    checks it as the bridge will, sends it, pushes the pages and returns the submission id.

    :param on_completed: assets (or their URIs) that receive an event when the work completes.
    :param on_failed: assets that receive an event when it fails or the bridge rejects it.
    :param on_canceled: assets that receive an event when it is canceled.
    :param trigger: per outcome ("completed", "failed", "canceled"), DAG runs to start:
        `{"completed": [{"dag_id": "evaluate", "conf": {...}}]}`. Templated.
    :param partition_key: the partition of the asset events the outcome posts, for consumers on
        a `PartitionedAssetTimetable` (Airflow 3.2+). Templated: `"{{ ds }}"`.
    :param conn_id: the `azureml_bridge` Airflow connection that says where submissions go
        (Service Bus namespace, queue, workspace id); default `azureml_bridge_default`, used when
        it exists. Without one, the `BRIDGE_*` environment variables are read as before.
    :param queue_name: the submission queue; overrides the connection and `BRIDGE_SUBMISSION_QUEUE`.
    :param servicebus_namespace: the Service Bus namespace; overrides the connection and
        `BRIDGE_SERVICEBUS_NAMESPACE`.

    The submission id is derived from the task instance (DAG id, run id, task id, map index), so
    a retried task resends the same submission: Service Bus drops the duplicate message and the
    bridge never acts twice. Invalid work fails the task before anything is sent, without
    retries; a queue that cannot be reached fails it with retries.
    """

    template_fields: Sequence[str] = _ROUTE_FIELDS
    ui_color = "#cfe8fc"

    def __init__(
        self,
        *,
        on_completed: Iterable[AssetArgument] = (),
        on_failed: Iterable[AssetArgument] = (),
        on_canceled: Iterable[AssetArgument] = (),
        trigger: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        partition_key: str | None = None,
        conn_id: str | None = None,
        queue_name: str | None = None,
        servicebus_namespace: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.on_completed = asset_uris(on_completed)
        self.on_failed = asset_uris(on_failed)
        self.on_canceled = asset_uris(on_canceled)
        self.trigger = dict(trigger or {})
        self.queue_name = queue_name
        self.servicebus_namespace = servicebus_namespace
        self.conn_id = conn_id
        self.partition_key = partition_key

    def execute(self, context: Context) -> str:
        started = time.monotonic()
        try:
            submission = self.submission(context["ti"])
            env = self.queue_settings()
            self.send(submission, env)
        except PermanentError as exc:
            raise AirflowFailException(str(exc)) from exc
        urls = self.studio_urls(submission, env.get(WORKSPACE_ID, "").strip() or None)
        self.log_sent(submission, urls, (time.monotonic() - started) * 1000)
        for key, url in urls.items():
            context["ti"].xcom_push(key=key, value=url)
        context["ti"].xcom_push(key=TRACEPARENT_XCOM_KEY, value=submission.traceparent)
        return submission.id

    def work(self) -> dict[str, Any]:
        """What the submission asks for: `{"job": ...}` or `{"operation": ...}`."""
        raise NotImplementedError

    def studio_urls(self, submission: Submission, workspace_id: str | None) -> Urls:
        """The Studio pages this task's links lead to, by XCom key (None: no page yet)."""
        return {}

    def log_sent(self, submission: Submission, urls: Urls, elapsed_ms: float) -> None:
        pages = ", ".join(url for url in urls.values() if url) or f"(set {WORKSPACE_ID} for links)"
        self.log.info(
            "Submitted Azure ML operation %s %s in %.0f ms; trace %s; Studio: %s",
            submission.kind, submission.id, elapsed_ms, submission.traceparent, pages,
        )  # fmt: skip

    def submission(self, ti: Any) -> Submission:
        """This task instance's submission, checked against the contract as the bridge will."""
        origin = Origin(
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            map_index=-1 if ti.map_index is None else ti.map_index,
            cleared=cleared_at(ti),
        )
        fields = {
            "origin": origin,
            **self.work(),
            "on": {
                "completed": self.on_completed,
                "failed": self.on_failed,
                "canceled": self.on_canceled,
            },
            "trigger": self.trigger,
            "traceparent": task_traceparent(),
            "partition_key": self.partition_key or None,
        }
        try:
            submission = Submission.model_validate(fields)
        except ValidationError as exc:
            raise InvalidSubmission(f"submission is invalid: {describe(exc)}") from exc
        # Round-trip through the receiver's parser: the same size limit and checks, applied here.
        return Submission.parse(submission.to_json())

    def queue_settings(self) -> dict[str, str]:
        """The settings this task sends with: the connection's, if there is one, over the
        environment's (`bridge.provider.hooks` gives the order)."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        from bridge.provider.hooks import AzureMLBridgeHook

        try:
            connection = AzureMLBridgeHook.find(self.conn_id)
        except AirflowNotFoundException as exc:
            raise ConfigurationError(
                f"Airflow has no connection {self.conn_id!r} (conn_id=): create it (type "
                "azureml_bridge) in the UI, as AIRFLOW_CONN_*, or in the secrets backend"
            ) from exc
        if connection is None:
            return dict(os.environ)
        self.log.info("Sending through Airflow connection %s", connection.conn_id)
        return connection.environment(os.environ)

    def send(self, submission: Submission, env: Mapping[str, str] | None = None) -> None:
        sender = sender_from_env(
            os.environ if env is None else env,
            queue_name=self.queue_name,
            namespace=self.servicebus_namespace,
        )
        try:
            sender.send(submission)
        finally:
            sender.close()


class SubmitAzureMLJobOperator(AzureMLBridgeOperator):
    """Submit an Azure ML job through the bridge; its outcome arrives later as asset events.

    :param job: an Azure ML YAML job file (a path relative to the DAG file's folder, or absolute),
        a mapping in Azure ML's YAML job schema, or a `bridge.contracts.CommandJob`. Templated;
        Azure ML bindings such as `${{inputs.lr}}` are left for Azure ML.

    The routes (`on_completed`, `on_failed`, `on_canceled`, `trigger`), `partition_key`,
    `conn_id`, `queue_name` and `servicebus_namespace` are `AzureMLBridgeOperator`'s.

    Returns the Azure ML job name (XCom `return_value`) and pushes the job's Azure ML Studio URL
    as XCom `studio_url` (None unless the connection or `BRIDGE_AZUREML_WORKSPACE_ID` gives the
    workspace id).

    The job name is derived from the task instance (DAG id, run id, task id, map index), so a
    retried task resends the same submission id: Service Bus drops the duplicate message and the
    bridge never creates a second job. An invalid job fails the task before anything is sent,
    without retries; a queue that cannot be reached, does not exist yet or refuses the
    identity (a role still propagating) fails it with retries.
    """

    template_fields: Sequence[str] = ("job", *_ROUTE_FIELDS)
    operator_extra_links = (AzureMLStudioLink(),)

    def __init__(
        self,
        *,
        job: JobArgument,
        on_completed: Iterable[AssetArgument] = (),
        on_failed: Iterable[AssetArgument] = (),
        on_canceled: Iterable[AssetArgument] = (),
        trigger: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        partition_key: str | None = None,
        conn_id: str | None = None,
        queue_name: str | None = None,
        servicebus_namespace: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            on_completed=on_completed,
            on_failed=on_failed,
            on_canceled=on_canceled,
            trigger=trigger,
            partition_key=partition_key,
            conn_id=conn_id,
            queue_name=queue_name,
            servicebus_namespace=servicebus_namespace,
            **kwargs,
        )
        self.job = job

    def work(self) -> dict[str, Any]:
        return {"job": self.job_model()}

    def studio_urls(self, submission: Submission, workspace_id: str | None) -> Urls:
        return {STUDIO_URL_XCOM_KEY: studio_url(submission.id, workspace_id)}

    def log_sent(self, submission: Submission, urls: Urls, elapsed_ms: float) -> None:
        self.log.info(
            "Submitted Azure ML job %s (experiment %s) in %.0f ms; trace %s; Studio: %s",
            submission.id, submission.experiment_name, elapsed_ms, submission.traceparent,
            urls[STUDIO_URL_XCOM_KEY] or f"(set {WORKSPACE_ID} for a link)",
        )  # fmt: skip

    def job_model(self) -> CommandJob | dict[str, Any]:
        if isinstance(self.job, CommandJob):
            return self.job
        if isinstance(self.job, Mapping):
            return {"kind": "yaml", "spec": checked_spec(dict(self.job), "job")}
        if isinstance(self.job, str | os.PathLike):
            path = self.job_path(Path(self.job))
            return {"kind": "yaml", "spec": checked_spec(load_job_file(path), str(path))}
        raise InvalidSubmission(
            "job must be a YAML job file path, a mapping in Azure ML's YAML job schema or a "
            f"CommandJob, not {type(self.job).__name__}"
        )

    def job_path(self, path: Path) -> Path:
        """Relative paths are read next to the DAG file, wherever the worker runs."""
        if path.is_absolute() or not self.has_dag() or not self.dag.fileloc:  # type: ignore[no-untyped-call,unused-ignore]
            return path
        return Path(self.dag.fileloc).parent / path

    def render_template(
        self,
        content: Any,
        context: Context,
        jinja_env: Any = None,
        seen_oids: set[int] | None = None,
    ) -> Any:
        if isinstance(content, str) and "${{" in content:
            content = _AZUREML_BINDING.sub(r"{% raw %}\g<0>{% endraw %}", content)
        return super().render_template(content, context, jinja_env, seen_oids)


class AzureMLOperationOperator(AzureMLBridgeOperator):
    """An operation on models and endpoints (docs/lifecycle.md), sent as one submission.

    A subclass builds the operation from its (templated) arguments in `operation`; the rest is
    `AzureMLBridgeOperator`'s, routes included. When the operation completes, the bridge posts
    the `on_completed` assets' event with `extra["operation"]` (the kind) and `extra["result"]`
    (what the operation made: a model version, a deployment, ...), so the next DAG can template
    its own arguments from it (`bridge.provider.templates.from_triggering_event`).
    """

    kind: ClassVar[str]

    def operation(self) -> dict[str, Any]:
        """The operation's fields, as `bridge.operations` names them."""
        raise NotImplementedError

    def work(self) -> dict[str, Any]:
        fields = {name: value for name, value in self.operation().items() if value is not None}
        return {"operation": {"kind": self.kind, **fields}}


class RegisterAzureMLModelOperator(AzureMLOperationOperator):
    """Register a model version from a job's named output (or a path).

    :param name: the model's name.
    :param from_job: the job whose output holds the model: its name, as the submitting task
        returned it and as `extra["job_name"]` carries it. Templated, e.g.
        `from_triggering_event("job_name")`.
    :param output_name: the job's named output that holds the model (default `model`).
    :param path: instead of `from_job`: where the files are (`azureml://...`, `https://...`).
    :param version: the version to create; unset, Azure ML's next one.
    :param model_type: `custom_model`, `mlflow_model` or `triton_model`.
    :param description, tags, properties: the model version's.

    `extra["result"]` on completion: `name`, `version`, `id`, `model` (`name:version`). The
    "Azure ML model" link leads to the version when it is given here.
    """

    kind = "register_model"
    template_fields: Sequence[str] = (
        "name", "from_job", "output_name", "path", "version", "model_type", "description", "tags",
        "properties", *_ROUTE_FIELDS,
    )  # fmt: skip
    operator_extra_links = (AzureMLModelLink(),)

    def __init__(
        self,
        *,
        name: str,
        from_job: str | None = None,
        output_name: str = "model",
        path: str | None = None,
        version: str | None = None,
        model_type: str = "custom_model",
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.from_job = from_job
        self.output_name = output_name  # not `output`: BaseOperator's XComArg
        self.path = path
        self.version = version
        self.model_type = model_type
        self.description = description
        self.tags = dict(tags or {})
        self.properties = dict(properties or {})

    def operation(self) -> dict[str, Any]:
        from_job = given(self.from_job)
        return {
            "name": self.name,
            "type": self.model_type,
            "from_job": {"job": from_job, "output": self.output_name} if from_job else None,
            "path": given(self.path),
            "version": given(self.version),
            "description": given(self.description),
            "tags": self.tags,
            "properties": self.properties,
        }

    def studio_urls(self, submission: Submission, workspace_id: str | None) -> Urls:
        operation = submission.operation
        version = getattr(operation, "version", None)
        name = str(getattr(operation, "name", self.name))
        return {MODEL_URL_XCOM_KEY: studio.model_url(name, version, workspace_id)}


class DeployAzureMLModelOperator(AzureMLOperationOperator):
    """Create or update a managed online endpoint and one deployment of a model version on it.

    :param endpoint: the endpoint (created if absent).
    :param deployment: the deployment on it (`blue`, `green`, ...).
    :param model: `name:version` (or `azureml:name:version`). Templated, e.g.
        `from_triggering_event("result", "model")` after a registration.
    :param instance_type: the VM size, e.g. `Standard_DS3_v2`.
    :param instance_count: how many instances.
    :param traffic: the deployment's share in percent once ready; unset keeps the endpoint's
        traffic (a new deployment on a live endpoint then serves nothing: blue/green starts at
        0 %), except on a new endpoint, whose first deployment takes 100 %.
    :param environment: the scoring environment; unset for an MLflow model.
    :param code, scoring_script: the scoring code asset and its entry script; go together.
    :param tags: the deployment's.

    `extra["result"]` on completion: `endpoint`, `deployment`, `model`, `scoring_uri`,
    `traffic` (deployment to percent). Links: the model version and the endpoint.
    """

    kind = "deploy"
    template_fields: Sequence[str] = (
        "endpoint", "deployment", "model", "instance_type", "instance_count", "traffic",
        "environment", "code", "scoring_script", "tags", *_ROUTE_FIELDS,
    )  # fmt: skip
    operator_extra_links = (AzureMLModelLink(), AzureMLEndpointLink())

    def __init__(
        self,
        *,
        endpoint: str,
        deployment: str,
        model: str,
        instance_type: str,
        instance_count: int | str = 1,
        traffic: int | str | None = None,
        environment: str | None = None,
        code: str | None = None,
        scoring_script: str | None = None,
        tags: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.endpoint = endpoint
        self.deployment = deployment
        self.model = model
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.traffic = traffic
        self.environment = environment
        self.code = code
        self.scoring_script = scoring_script
        self.tags = dict(tags or {})

    def operation(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "deployment": self.deployment,
            "model": self.model,
            "instance_type": self.instance_type,
            "instance_count": self.instance_count,
            "traffic": given(self.traffic),
            "environment": given(self.environment),
            "code": given(self.code),
            "scoring_script": given(self.scoring_script),
            "tags": self.tags,
        }

    def studio_urls(self, submission: Submission, workspace_id: str | None) -> Urls:
        deploy = sent(submission, Deploy)
        return {
            MODEL_URL_XCOM_KEY: studio.model_url(
                deploy.model_name, deploy.model_version, workspace_id
            ),
            ENDPOINT_URL_XCOM_KEY: studio.endpoint_url(deploy.endpoint, workspace_id),
        }


class SetAzureMLTrafficOperator(AzureMLOperationOperator):
    """Shift an online endpoint's traffic between its deployments.

    :param endpoint: the endpoint.
    :param traffic: deployment name to percent, 100 in all: `{"blue": 0, "green": 100}`.
        Templated (values rendered as text are read as numbers).

    `extra["result"]` on completion: `endpoint`, `traffic`, `scoring_uri`. Link: the endpoint.
    """

    kind = "set_traffic"
    template_fields: Sequence[str] = ("endpoint", "traffic", *_ROUTE_FIELDS)
    operator_extra_links = (AzureMLEndpointLink(),)

    def __init__(self, *, endpoint: str, traffic: Mapping[str, int | str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.endpoint = endpoint
        self.traffic = dict(traffic)

    def operation(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "traffic": self.traffic}

    def studio_urls(self, submission: Submission, workspace_id: str | None) -> Urls:
        return {ENDPOINT_URL_XCOM_KEY: studio.endpoint_url(self.endpoint, workspace_id)}


class InvokeAzureMLBatchEndpointOperator(AzureMLOperationOperator):
    """Score data with a batch endpoint: the `batch_score` operation. Its job takes the
    submission's name, so it ends as any job does, on the job's own events or the sweep.

    :param endpoint: the batch endpoint.
    :param deployment: one of its deployments; unset, its default.
    :param inputs: input name to `{"type", "path"}` (a `uri_folder` by default) or a literal.
    :param experiment_name: the job's experiment; unset, the DAG id.

    `extra["result"]` on completion: `endpoint`, `deployment`, `job`, and `extra["outputs"]` as
    for any completed job. Link: the scoring job in Studio.
    """

    kind = "batch_score"
    template_fields: Sequence[str] = (
        "endpoint", "deployment", "inputs", "experiment_name", *_ROUTE_FIELDS,
    )  # fmt: skip
    operator_extra_links = (AzureMLStudioLink(),)

    def __init__(
        self,
        *,
        endpoint: str,
        deployment: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        experiment_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.endpoint = endpoint
        self.deployment = deployment
        self.inputs = dict(inputs or {})
        self.experiment_name = experiment_name

    def operation(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "deployment": given(self.deployment),
            "inputs": self.inputs,
            "experiment_name": given(self.experiment_name),
        }

    def studio_urls(self, submission: Submission, workspace_id: str | None) -> Urls:
        return {STUDIO_URL_XCOM_KEY: studio.job_url(submission.id, workspace_id)}


class CancelAzureMLJobOperator(AzureMLOperationOperator):
    """Cancel a job the bridge submitted. The job's own `canceled` route fires once; this task's
    `on_completed` fires when the cancel call returns.

    :param job: the job's name (what its submitting task returned). Templated.
    :param origin: instead: the task that submitted it, `{"dag_id", "run_id", "task_id",
        "map_index"}`. Templated.

    `extra["result"]` on completion: `job`. Link: the job in Studio.
    """

    kind = "cancel"
    template_fields: Sequence[str] = ("job", "origin", *_ROUTE_FIELDS)
    operator_extra_links = (AzureMLStudioLink(),)

    def __init__(
        self,
        *,
        job: str | None = None,
        origin: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job = job
        self.origin = dict(origin) if origin is not None else None

    def operation(self) -> dict[str, Any]:
        return {"job": given(self.job), "origin": self.origin}

    def studio_urls(self, submission: Submission, workspace_id: str | None) -> Urls:
        cancel = sent(submission, Cancel)
        target = cancel.job if cancel.origin is None else job_name(cancel.origin)
        return {STUDIO_URL_XCOM_KEY: studio.job_url(str(target), workspace_id)}


class ShareAzureMLModelOperator(AzureMLOperationOperator):
    """Promote a model version from the workspace to an Azure ML registry, from which other
    workspaces (production's) deploy it.

    :param name, version: the model version in the workspace. Templated.
    :param registry: the registry's name.
    :param share_name, share_version: its name and version in the registry; unset, the same.

    `extra["result"]` on completion: `registry`, `name`, `version`, `id`, `model`
    (`azureml://registries/<registry>/models/<name>/versions/<version>`). Link: the version in
    the registry.
    """

    kind = "share_model"
    template_fields: Sequence[str] = (
        "name", "version", "registry", "share_name", "share_version", *_ROUTE_FIELDS,
    )  # fmt: skip
    operator_extra_links = (AzureMLModelLink(),)

    def __init__(
        self,
        *,
        name: str,
        version: str,
        registry: str,
        share_name: str | None = None,
        share_version: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.version = version
        self.registry = registry
        self.share_name = share_name
        self.share_version = share_version

    def operation(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "registry": self.registry,
            "share_name": given(self.share_name),
            "share_version": given(self.share_version),
        }

    def studio_urls(self, submission: Submission, workspace_id: str | None) -> Urls:
        share = sent(submission, ShareModel)
        name, version = share.share_name or share.name, share.share_version or share.version
        return {MODEL_URL_XCOM_KEY: studio.registry_model_url(share.registry, name, version)}


def given(value: Any) -> Any:
    """An optional argument as the contract takes it: a template that rendered to blank text is
    left out, like an argument never given."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def sent(submission: Submission, kind: type[_Op]) -> _Op:
    """The operation a submission carries, as the operator that built it knows it is."""
    if not isinstance(submission.operation, kind):
        raise TypeError(f"expected a {kind.__name__} operation, not {submission.kind}")
    return submission.operation


def task_traceparent() -> str:
    """The task's own trace context when Airflow traces it (OpenTelemetry), else a new trace:
    the bridge continues it, so every record of this job carries its trace id."""
    try:
        from opentelemetry import trace
    except ImportError:
        return TraceContext.new().traceparent
    ids = trace.get_current_span().get_span_context()
    if not ids.is_valid:
        return TraceContext.new().traceparent
    flags = f"{int(ids.trace_flags):02x}"
    return TraceContext(f"{ids.trace_id:032x}", f"{ids.span_id:016x}", flags).traceparent


def asset_uris(assets: Iterable[AssetArgument]) -> list[str]:
    """URIs as Airflow stores them (normalised by `Asset`), so the bridge finds the same asset."""
    if isinstance(assets, str | Asset):
        assets = [assets]
    return [asset.uri if isinstance(asset, Asset) else Asset(asset).uri for asset in assets]


def load_job_file(path: Path) -> Any:
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise InvalidSubmission(f"job file {path} not found") from exc
    except OSError as exc:
        raise InvalidSubmission(f"job file {path} cannot be read: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSubmission(f"job file {path} is not valid YAML: {exc}") from exc


def checked_spec(spec: Any, where: str) -> dict[str, Any]:
    """An Azure ML job mapping the Function App can create: a mapping, with no local code folder."""
    if not isinstance(spec, dict):
        raise InvalidSubmission(
            f"{where} must hold a mapping in Azure ML's YAML job schema, not {type(spec).__name__}"
        )
    code = spec.get("code")
    if isinstance(code, str) and not (code.startswith("azureml:") or "://" in code):
        raise InvalidSubmission(
            f"{where}: code {code!r} is a local folder, which the bridge cannot read; register it "
            "as an Azure ML code asset (azureml:name:version) or use a git or https URI"
        )
    return spec


def studio_url(job_name: str, workspace_id: str | None) -> str | None:
    """The job's page in Azure ML Studio, when the workspace's ARM id is known."""
    return studio.job_url(job_name, workspace_id)


def cleared_at(ti: Any) -> int:
    """The try number this task instance was last cleared at by a person, or 0.

    Airflow 3 sets `max_tries = try_number + task.retries` when a task instance is cleared (alone,
    with its run, or while running) and leaves it alone on an automatic retry
    (`clear_task_instances`, airflow/models/taskinstance.py; Airflow's own reschedule logic reads
    `max_tries - retries` the same way). `DagRun.clear_number` is no signal: a clear that leaves
    the run alone does not move it, and a retry in a run another task's clear touched does.
    """
    try:
        return max(0, int(ti.max_tries) - int(ti.task.retries))
    except (AttributeError, TypeError, ValueError):
        return 0
