"""`SubmitAzureMLJobOperator`: send an Azure ML job to the bridge and finish at once.

The task puts one submission on the submission queue and succeeds; it never waits for the job.
The job's outcome reaches Airflow later as asset events (and DAG runs) posted by the bridge, so
downstream DAGs schedule on the assets named in `on_completed` / `on_failed` / `on_canceled`.

Cheap to import: the queue SDKs load inside `execute`, PyYAML when a job file is read.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from pydantic import ValidationError

from bridge.audit import TraceContext
from bridge.contracts import CommandJob, Origin, Submission, describe
from bridge.errors import ConfigurationError, InvalidSubmission, PermanentError
from bridge.provider.links import STUDIO_URL_XCOM_KEY, AzureMLStudioLink
from bridge.provider.senders import WORKSPACE_ID, sender_from_env

if TYPE_CHECKING:
    from airflow.sdk import Context

STUDIO_URL = "https://ml.azure.com/runs/{job_name}?wsid={workspace_id}"
TRACEPARENT_XCOM_KEY = "traceparent"

# Azure ML's data bindings (`${{inputs.lr}}`) would otherwise be read as Jinja expressions.
_AZUREML_BINDING = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)

JobArgument: TypeAlias = str | os.PathLike[str] | Mapping[str, Any] | CommandJob
AssetArgument: TypeAlias = "str | Asset"


class SubmitAzureMLJobOperator(BaseOperator):  # type: ignore[misc,unused-ignore]
    """Submit an Azure ML job through the bridge; its outcome arrives later as asset events.

    :param job: an Azure ML YAML job file (a path relative to the DAG file's folder, or absolute),
        a mapping in Azure ML's YAML job schema, or a `bridge.contracts.CommandJob`. Templated;
        Azure ML bindings such as `${{inputs.lr}}` are left for Azure ML.
    :param on_completed: assets (or their URIs) that receive an event when the job completes.
    :param on_failed: assets that receive an event when the job fails or the bridge rejects it.
    :param on_canceled: assets that receive an event when the job is canceled.
    :param trigger: per outcome ("completed", "failed", "canceled"), DAG runs to start:
        `{"completed": [{"dag_id": "evaluate", "conf": {...}}]}`. Templated.
    :param partition_key: the partition of the asset events the job's outcome posts, for
        consumers on a `PartitionedAssetTimetable` (Airflow 3.2+). Templated: `"{{ ds }}"`.
    :param conn_id: the `azureml_bridge` Airflow connection that says where submissions go
        (Service Bus namespace, queue, workspace id); default `azureml_bridge_default`, used when
        it exists. Without one, the `BRIDGE_*` environment variables are read as before.
    :param queue_name: the submission queue; overrides the connection and `BRIDGE_SUBMISSION_QUEUE`.
    :param servicebus_namespace: the Service Bus namespace; overrides the connection and
        `BRIDGE_SERVICEBUS_NAMESPACE`.

    Returns the Azure ML job name (XCom `return_value`) and pushes the job's Azure ML Studio URL
    as XCom `studio_url` (None unless `BRIDGE_AZUREML_WORKSPACE_ID` is set).

    The job name is derived from the task instance (DAG id, run id, task id, map index), so a
    retried task resends the same submission id: Service Bus drops the duplicate message and the
    bridge never creates a second job. An invalid job fails the task before anything is sent,
    without retries; a queue that cannot be reached fails it with retries.
    """

    template_fields: Sequence[str] = ("job", "trigger", "partition_key")
    ui_color = "#cfe8fc"
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
        super().__init__(**kwargs)
        self.job = job
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
            env = self.environment()
            self.send(submission, env)
        except PermanentError as exc:
            raise AirflowFailException(str(exc)) from exc
        url = studio_url(submission.id, env.get(WORKSPACE_ID, "").strip() or None)
        self.log.info(
            "Submitted Azure ML job %s (experiment %s) in %.0f ms; trace %s; Studio: %s",
            submission.id, submission.experiment_name, (time.monotonic() - started) * 1000,
            submission.traceparent, url or f"(set {WORKSPACE_ID} for a link)",
        )  # fmt: skip
        context["ti"].xcom_push(key=STUDIO_URL_XCOM_KEY, value=url)
        context["ti"].xcom_push(key=TRACEPARENT_XCOM_KEY, value=submission.traceparent)
        return submission.id

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
            "job": self.job_model(),
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

    def environment(self) -> dict[str, str]:
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
    if not workspace_id:
        return None
    return STUDIO_URL.format(job_name=job_name, workspace_id=workspace_id)


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
