"""A loopback Azure ML workspace: the part of the jobs API that azure-ai-ml uses, and job events.

What azure-ai-ml sends for the jobs the bridge creates (seen with azure-ai-ml 1.35):
`jobs.create_or_update` of a command or sweep job with `environment="azureml:name:version"` and a
named compute is one `PUT .../jobs/{name}`; `jobs.get` is one GET; `jobs.begin_cancel` one POST
`.../jobs/{name}/cancel`. Models (`models`), batch endpoints (`batch`, whose invocations become
jobs here) and registries (`registry`) answer from modules of their own. Every other route answers
404 with an Azure error body and is recorded, so a test sees an unexpected call.

The ARM answers follow the REST API spec's examples (stable 2025-09-01): a PUT of an existing name
answers 200 with the existing job, unchanged; cancel answers 202 with a `Location` to poll, and the
job passes through CancelRequested to Canceled. Where real Azure is unverified the other answers
can be chosen (`repeat_put="409"`, `cancel_answer="200"`).

It serves HTTPS, as Azure does, with a certificate of the stack's own authority (`authority`):
azure-ai-ml refuses to send a bearer token over plain http for a pipeline job's workspace lookup.
A pipeline's inline steps are registered as anonymous components first (PUT
`.../components/{name}/versions/{version}`), then the job is PUT.

Online endpoints and deployments (ARM long-running writes, and their resource write events) are
`emulator.online` (`bridge.local.azureml.endpoints`); a model version PUT raises ModelRegistered.

Command jobs run as local shell commands in `workdir/jobs/{name}`; every other job type goes
Running -> Completed without running anything. Each status change is handed to the
`JobEventPublisher`, whose profile decides which events Azure ML would raise for it.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from bridge.events import Schema
from bridge.local.azureml.batch import SCORING_ROUTE, BatchEndpoints, BatchRun
from bridge.local.azureml.endpoints import OnlineEndpoints
from bridge.local.azureml.models import Models, RegisteredModel
from bridge.local.azureml.profiles import DOCUMENTED, Profile
from bridge.local.azureml.publisher import JobEventPublisher
from bridge.local.azureml.registry import Registries
from bridge.local.certificate import LocalCertificate
from bridge.local.event_grid import DEFAULT_RETRY_DELAYS, Delivery, EventGridTopic
from bridge.local.process import Lifecycle, LoopbackServer, Service

TERMINAL = frozenset({"Completed", "Failed", "Canceled"})
API_VERSION = "2025-09-01"
_WORKSPACE_ROUTE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)(?P<rest>/.*)?$",
    re.IGNORECASE,
)
_JOB_ROUTE = re.compile(r"^/jobs/(?P<name>[^/]+)(?P<cancel>/cancel)?$", re.IGNORECASE)
# Pipeline steps given inline are registered as anonymous components before the job's PUT.
_COMPONENT_ROUTE = re.compile(r"^/components/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$")
# Where a 202 from cancel points: Azure ML's long-running operation results.
_OPERATION_ROUTE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.MachineLearningServices/locations/"
    r"(?P<location>[^/]+)/mfeOperationResults/jc:(?P<name>[^/]+)$",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(r"\$\{\{\s*(inputs|outputs)\.(\w+)\s*\}\}")
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")
_DATASTORE_URI = re.compile(r"^azureml://datastores/(?P<store>[^/]+)/paths/(?P<path>.*)$")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any  # parsed JSON, or None
    time: float  # time.time()


@dataclass
class Answer:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def azure_error(status: int, code: str, message: str) -> Answer:
    return Answer(status, {"error": {"code": code, "message": message}})


@dataclass
class EmulatedJob:
    """One job as the emulator holds it: the PUT body, its status history and its local folder."""

    name: str
    put_body: dict[str, Any]
    folder: Path
    status: str = "NotStarted"
    history: list[tuple[str, float, float]] = field(default_factory=list)  # status, monotonic, wall
    exit_code: int | None = None
    outcome: str = "Completed"  # what a job that runs no command ends as (batch: maybe Failed)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    process: Service | None = field(default=None, repr=False)

    @property
    def properties(self) -> dict[str, Any]:
        return dict(self.put_body["properties"])

    @property
    def job_type(self) -> str:
        return str(self.properties.get("jobType", ""))

    @property
    def experiment_name(self) -> str:
        return str(self.properties.get("experimentName") or "Default")

    @property
    def outputs_dir(self) -> Path:
        return self.folder / "outputs"

    @property
    def log_path(self) -> Path:
        return self.folder / "user_logs" / "std_log.txt"


class AzureMLEmulator(Lifecycle):
    SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
    RESOURCE_GROUP = "bridge-local"
    WORKSPACE = "local-workspace"

    def __init__(
        self,
        workdir: Path,
        *,
        webhook_url: str | None = None,
        event_schema: Schema = "eventgrid",
        access_key: str = "local-emulator-key",
        port: int = 0,
        status_case: Literal["title", "lower"] = "title",
        retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS,
        profile: Profile = DOCUMENTED,
        repeat_put: Literal["200", "409", "400"] = "200",
        cancel_answer: Literal["202", "200"] = "202",
        cancel_seconds: float = 0.5,
        online_seconds: float = 0.5,
        tls: bool = True,
        dead_letter: Callable[[Delivery], object] | None = None,
        workspace: str = WORKSPACE,
        registries: Registries | None = None,
    ) -> None:
        self.workdir = workdir
        self.workspace = workspace
        self.tls = tls
        self.certificate: LocalCertificate | None = None
        self.port = port
        self.repeat_put = repeat_put
        self.cancel_answer = cancel_answer
        self.cancel_seconds = cancel_seconds  # CancelRequested -> Canceled
        self.workspace_id = (
            f"/subscriptions/{self.SUBSCRIPTION_ID}/resourceGroups/{self.RESOURCE_GROUP}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace}"
        )
        self.requests: list[RecordedRequest] = []
        self._topic = EventGridTopic(
            access_key=access_key,
            webhook_url=webhook_url,
            retry_delays=retry_delays,
            loss=profile.loss,
            dead_letter=dead_letter,
        )
        self._publisher = JobEventPublisher(
            self._topic,
            self.workspace_id,
            profile=profile,
            schema=event_schema,
            status_case=status_case,
        )
        self._jobs: dict[str, EmulatedJob] = {}
        self._components: dict[str, dict[str, Any]] = {}
        self.models = Models(
            self.workspace_id,
            on_registered=self._model_registered,
            has_job=lambda name: self.job(name) is not None,
        )
        self.online = OnlineEndpoints(
            self.workspace_id,
            models=self.models,
            publisher=self._publisher,
            base_url=lambda: self.endpoint,
            online_seconds=online_seconds,  # an online write's Creating -> Succeeded/Failed
        )
        self.batch = BatchEndpoints(self.workspace_id)
        # Registries are regional, not a workspace's: a second workspace is given the first's,
        # to deploy what it shared (shares into them copy from the first workspace's models).
        if registries is None:
            registries = Registries(self.SUBSCRIPTION_ID, self._shared_model)
        self.registries = registries
        self._failures: list[tuple[str | None, Answer]] = []  # (the job it is for, answer)
        self._changed = threading.Condition()
        self._server: LoopbackServer | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> AzureMLEmulator:
        (self.workdir / "jobs").mkdir(parents=True, exist_ok=True)
        self._server = _Server(("127.0.0.1", self.port), _Handler, self)
        if self.tls:
            self.certificate = LocalCertificate.create(self.workdir / "tls")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.certificate.certificate, self.certificate.key)
            # The handshake happens in the request's own thread, not in the accepting one.
            self._server.socket = context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = int(self._server.server_address[1])
        serve = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="azureml", daemon=True
        )  # a short poll interval: stop() waits for one
        serve.start()
        self._topic.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._changed:
            running = [job.process for job in self._jobs.values() if job.process is not None]
        for process in running:
            process.stop(grace=1)
        self.online.close()
        self._topic.stop()

    # -- what tests and the dev host use ---------------------------------------------------------

    def azureml_settings(self) -> dict[str, Any]:
        """The `Settings` fields that point the bridge at this emulator."""
        return {
            "azureml_subscription_id": self.SUBSCRIPTION_ID,
            "azureml_resource_group": self.RESOURCE_GROUP,
            "azureml_workspace": self.workspace,
            "azureml_endpoint": self.endpoint,
            "azureml_ca_file": str(self.authority) if self.authority else None,
        }

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    @property
    def authority(self) -> Path | None:
        """The CA certificate a client must trust to reach the emulator over HTTPS."""
        return self.certificate.authority if self.certificate else None

    @property
    def webhook_url(self) -> str | None:
        return self._topic.webhook_url

    @webhook_url.setter
    def webhook_url(self, url: str | None) -> None:
        self._topic.webhook_url = url

    @property
    def profile(self) -> Profile:
        return self._publisher.profile

    @profile.setter
    def profile(self, profile: Profile) -> None:
        """Switch profiles on a running emulator: for jobs' later status changes."""
        self._publisher.profile = profile
        self._topic.loss = profile.loss

    @property
    def event_schema(self) -> Schema:
        return self._publisher.schema

    @property
    def events(self) -> list[Delivery]:
        """Every event published, in order, exactly as sent, with its delivery outcome."""
        return list(self._topic.deliveries)

    def settled_events(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        """The first `count` events once each is delivered, dead-lettered or unsubscribed."""
        return self._topic.settled(count, timeout)

    def job(self, name: str) -> EmulatedJob | None:
        with self._changed:
            return self._jobs.get(name)

    def experiment_id(self, experiment_name: str) -> str:
        key = f"{self.workspace_id}/experiments/{experiment_name}"
        return str(uuid.uuid5(uuid.NAMESPACE_URL, key))

    def datastore_path(self, uri: str) -> Path | None:
        """Where an `azureml://datastores/{store}/paths/{path}` URI lives on this machine."""
        found = _DATASTORE_URI.match(uri)
        if found is None:
            return None
        return self.workdir / "datastores" / found["store"] / found["path"]

    def wait_for_status(self, name: str, statuses: Collection[str], timeout: float) -> str:
        wanted = {status.lower() for status in statuses}
        with self._changed:
            reached = self._changed.wait_for(
                lambda: name in self._jobs and self._jobs[name].status.lower() in wanted, timeout
            )
            current = self._jobs[name].status if name in self._jobs else None
        if not reached or current is None:
            raise TimeoutError(
                f"job {name} is {current or 'unknown'} after {timeout}s, not in {sorted(statuses)}"
            )
        return current

    def seed(self, name: str, status: str, experiment_name: str = "Default") -> EmulatedJob:
        """Hold a command job already in `status` (Running, Completed, ...), as if it had been
        created and run before: nothing runs, no event is published, no request is recorded.
        For benchmarks that need thousands of jobs Azure ML knows (`bench/ledger.py`)."""
        body = {
            "properties": {
                "jobType": "Command",
                "command": "true",
                "environmentId": "azureml:seeded:1",
                "computeId": "seeded",
                "experimentName": experiment_name,
            }
        }
        job = EmulatedJob(name, body, self.workdir / "jobs" / name, status=status)
        job.history.append((status, time.monotonic(), time.time()))
        with self._changed:
            self._jobs[name] = job
            self._changed.notify_all()
        return job

    def forget(self, name: str) -> None:
        """Delete the job, as a workspace's retention or a user would: it reads as 404 from now."""
        with self._changed:
            job = self._jobs.pop(name, None)
        if job is not None and job.process is not None:
            job.process.stop(grace=1)

    def fail_next(
        self,
        status: int,
        count: int = 1,
        body: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        job: str | None = None,
    ) -> None:
        """Answer the next `count` API requests with this status (Azure error body by default);
        with `job`, only requests about that job, so other clients of a shared emulator are
        not answered with a fault meant for one test."""
        default = {"error": {"code": "InjectedFault", "message": f"injected HTTP {status}"}}
        with self._changed:
            answer = Answer(status, body or default, dict(headers or {}))
            self._failures += [(job, answer)] * count

    def _injected(self, path: str) -> Answer | None:
        """The first injected fault meant for this request, taken off the list (lock held)."""
        for index, (job, answer) in enumerate(self._failures):
            if job is None or path.rstrip("/").endswith(f"/jobs/{job}"):
                del self._failures[index]
                return answer
        return None

    # -- HTTP ------------------------------------------------------------------------------------

    def handle(self, method: str, target: str, raw: bytes, headers: Mapping[str, str]) -> Answer:
        """Answer one API request; `headers` have lower-case names."""
        url = urlsplit(target)
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        with self._changed:
            self.requests.append(
                RecordedRequest(method, url.path, dict(parse_qsl(url.query)), body, time.time())
            )
            injected = self._injected(url.path)
            if injected is not None:
                return injected
        if not headers.get("authorization", "").startswith("Bearer "):
            return azure_error(401, "AuthenticationFailed", "no bearer token in Authorization")
        operation = _OPERATION_ROUTE.match(url.path)
        if operation is not None and method == "GET":
            return self._operation(operation["name"])
        online = self.online.operation_status(method, url.path)
        if online is not None:
            return Answer(online.status, online.body, dict(online.headers))
        scoring = SCORING_ROUTE.match(url.path)
        if scoring is not None and method == "POST":
            return self._invoke_batch(scoring["endpoint"], headers, body)
        registry = self.registries.handle(method, url.path, body, self.endpoint)
        if registry is not None:
            return Answer(registry.status, registry.body, dict(registry.headers))
        workspace = _WORKSPACE_ROUTE.match(url.path)
        if workspace is None:
            return azure_error(404, "NotFound", f"the emulator does not serve {method} {url.path}")
        if (workspace["sub"], workspace["rg"].lower(), workspace["ws"].lower()) != (
            self.SUBSCRIPTION_ID,
            self.RESOURCE_GROUP.lower(),
            self.workspace.lower(),
        ):
            return azure_error(404, "ResourceNotFound", f"workspace {workspace['ws']} not found")
        return self._workspace_api(method, workspace["rest"] or "", body, url.path)

    def _workspace_api(self, method: str, rest: str, body: Any, path: str) -> Answer:
        """A request under the workspace's ARM id (`rest` is what follows it)."""
        if not rest and method == "GET":
            return Answer(200, self._workspace())
        component = _COMPONENT_ROUTE.match(rest)
        if component is not None and method in ("PUT", "GET"):
            return self._component(path, method, body)
        models = self.models.handle(method, rest, body)
        if models is not None:
            return Answer(models.status, models.body)
        online = self.online.handle(method, rest, body)
        if online is not None:
            return Answer(online.status, online.body, dict(online.headers))
        batch = self.batch.handle(method, rest, self.endpoint)
        if batch is not None:
            return Answer(batch.status, batch.body, dict(batch.headers))
        route = _JOB_ROUTE.match(rest)
        if route is None:
            return azure_error(404, "NotFound", f"the emulator does not serve {method} {path}")
        name, cancel = route["name"], bool(route["cancel"])
        if method == "PUT" and not cancel:
            return self._create(name, body)
        if method == "GET" and not cancel:
            return self._read(name)
        if method == "POST" and cancel:
            return self._cancel(name)
        return azure_error(405, "MethodNotAllowed", f"{method} is not supported on {path}")

    def _workspace(self) -> dict[str, Any]:
        return {
            "id": self.workspace_id,
            "name": self.workspace,
            "type": "Microsoft.MachineLearningServices/workspaces",
            "location": "local",
            "properties": {"discoveryUrl": self.endpoint, "workspaceId": self.experiment_id("")},
        }

    def _component(self, path: str, method: str, body: Any) -> Answer:
        """Anonymous components, as the SDK registers a pipeline's inline steps: kept as sent."""
        with self._changed:
            if method == "PUT":
                if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
                    return azure_error(400, "UserError", "a component needs 'properties'")
                existed = path in self._components
                self._components[path] = {"id": path, "name": path.rsplit("/", 1)[-1],
                                          "properties": body["properties"]}  # fmt: skip
                return Answer(200 if existed else 201, self._components[path])
            found = self._components.get(path)
        if found is None:
            return azure_error(404, "UserError", f"component {path} not found")
        return Answer(200, found)

    def _create(self, name: str, body: Any) -> Answer:
        problem = _job_body_problem(body)
        if problem:
            return azure_error(400, "UserError", problem)
        job = EmulatedJob(name, body, self.workdir / "jobs" / name)
        with self._changed:
            if name in self._jobs:
                return self._repeated_put(self._jobs[name])
            answer = Answer(201, self._admit(job))
        return answer

    def _admit(self, job: EmulatedJob) -> dict[str, Any]:
        """Hold a new job and start its run (lock held); its resource as created, before the run
        moves on."""
        self._jobs[job.name] = job
        self._set_status(job, "NotStarted")
        resource = self._resource(job)
        threading.Thread(target=self._run, args=(job,), name=f"job-{job.name}", daemon=True).start()
        return resource

    def _invoke_batch(self, endpoint: str, headers: Mapping[str, str], body: Any) -> Answer:
        """A batch endpoint's scoring POST: its job joins the workspace's jobs, runs and raises
        run events like any other (without the bridge's tags: invoke sends none)."""
        run = self.batch.invoke(endpoint, headers, body)
        if not isinstance(run, BatchRun):
            return Answer(run.status, run.body, dict(run.headers))
        job = EmulatedJob(run.name, run.body, self.workdir / "jobs" / run.name, outcome=run.outcome)
        with self._changed:
            if run.name in self._jobs:
                return azure_error(409, "UserError", f"a job named {run.name} already exists")
            return Answer(200, self._admit(job))

    def _model_registered(self, model: RegisteredModel) -> None:
        properties = model.properties
        self._publisher.model_registered(
            model.name,
            model.version,
            tags=dict(properties.get("tags") or {}),
            properties=dict(properties.get("properties") or {}),
        )

    def _shared_model(self, workspace_guid: str, name: str, version: str) -> dict[str, Any] | None:
        """What a registry import copies: this workspace's model version, as it holds it."""
        if workspace_guid != self.experiment_id(""):
            return None
        found = self.models.get(name, version)
        return None if found is None else dict(found.properties)

    def _read(self, name: str) -> Answer:
        job = self.job(name)
        if job is None:
            return azure_error(404, "UserError", f"job {name} not found")
        return Answer(200, self._resource(job))

    def _repeated_put(self, existing: EmulatedJob) -> Answer:
        """A PUT of a name that exists: the spec's 200 with the job as it is, or a refusal."""
        if self.repeat_put == "409":
            return azure_error(409, "UserError", f"a job named {existing.name} already exists")
        if self.repeat_put == "400":
            message = f"job {existing.name} exists; its properties cannot be changed"
            return azure_error(400, "UserError", message)
        return Answer(200, self._resource(existing))

    def _cancel(self, name: str) -> Answer:
        job = self.job(name)
        if job is None:
            return azure_error(404, "UserError", f"job {name} not found")
        if self.cancel_answer == "200":
            self._stop(job)
            return Answer(200, {})
        if self._set_status(job, "CancelRequested"):
            threading.Timer(self.cancel_seconds, self._stop, args=(job,)).start()
        location = (
            f"{self.endpoint}subscriptions/{self.SUBSCRIPTION_ID}/providers/"
            f"Microsoft.MachineLearningServices/locations/local/mfeOperationResults/jc:{name}"
            f"?api-version={API_VERSION}"
        )
        return Answer(202, None, {"Location": location, "Retry-After": "1"})

    def _operation(self, name: str) -> Answer:
        """The cancel operation: 202 while the job is stopping, 200 once it is Canceled."""
        job = self.job(name)
        if job is None:
            return azure_error(404, "UserError", f"job {name} not found")
        if job.status in TERMINAL:
            return Answer(200, None)
        return Answer(202, None, {"Retry-After": "1"})

    def _stop(self, job: EmulatedJob) -> None:
        if self._finish(job, "Canceled") and job.process is not None:
            job.process.stop(grace=1)

    def _resource(self, job: EmulatedJob) -> dict[str, Any]:
        properties = job.properties
        studio = f"https://ml.azure.com/runs/{job.name}?wsid={self.workspace_id}"
        properties["status"] = job.status
        properties["outputs"] = self._outputs(job)
        properties["services"] = {
            **(properties.get("services") or {}),
            "Studio": {"jobServiceType": "Studio", "endpoint": studio, "status": None},
        }
        return {
            "id": f"{self.workspace_id}/jobs/{job.name}",
            "name": job.name,
            "type": "Microsoft.MachineLearningServices/workspaces/jobs",
            "properties": properties,
            "systemData": {"createdAt": job.created_at, "createdBy": "local-emulator"},
        }

    def _outputs(self, job: EmulatedJob) -> dict[str, Any]:
        """The job's outputs as the service reports them: every field named, the mode defaulted,
        and `uri` filled or left null by the profile (see `Profile.output_uris`)."""
        reported: dict[str, Any] = {}
        for name, output in (job.properties.get("outputs") or {}).items():
            uri = output.get("uri")
            if not uri and self.profile.output_uris == "filled":
                uri = f"azureml://datastores/workspaceblobstore/paths/azureml/{job.name}/{name}/"
            reported[name] = {
                "description": output.get("description"),
                "uri": uri or None,
                "assetName": output.get("assetName"),
                "assetVersion": output.get("assetVersion"),
                "mode": output.get("mode") or "ReadWriteMount",
                "jobOutputType": output.get("jobOutputType") or "uri_folder",
            }
        if self.profile.default_output and job.job_type == "Command":
            reported["default"] = {
                "description": None,
                "uri": f"azureml://datastores/workspaceartifactstore/ExperimentRun/dcid.{job.name}",
                "assetName": None,
                "assetVersion": None,
                "mode": "ReadWriteMount",
                "jobOutputType": "uri_folder",
            }
        return reported

    # -- running a job ---------------------------------------------------------------------------

    def _run(self, job: EmulatedJob) -> None:
        if not (self._set_status(job, "Queued") and self._set_status(job, "Running")):
            return  # canceled while queued
        status = self._execute(job) if job.job_type == "Command" else job.outcome
        self._finish(job, status)

    def _execute(self, job: EmulatedJob) -> str:
        properties = job.properties
        job.outputs_dir.mkdir(parents=True, exist_ok=True)
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = _PLACEHOLDER.sub(
            lambda ref: self._resolve(job, ref[1], ref[2]), properties["command"]
        )
        env = {
            **os.environ,
            **(properties.get("environmentVariables") or {}),
            "AZUREML_RUN_ID": job.name,
            "AZUREML_EXPERIMENT_NAME": job.experiment_name,
        }
        service = Service(
            f"job {job.name}", ["/bin/sh", "-c", command], log=job.log_path, env=env, cwd=job.folder
        )
        with self._changed:
            if job.status in TERMINAL or job.status == "CancelRequested":
                return "Canceled"  # canceled before it started
            job.process = service.start()
        process = service.process
        assert process is not None
        try:
            job.exit_code = process.wait(timeout=_seconds(properties.get("limits")))
        except subprocess.TimeoutExpired:
            service.stop(grace=1)
            with job.log_path.open("a") as log:
                log.write("\n[emulator] the job exceeded its timeout and was stopped\n")
            return "Failed"
        return "Completed" if job.exit_code == 0 else "Failed"

    def _resolve(self, job: EmulatedJob, kind: str, name: str) -> str:
        declared = job.properties.get(kind) or {}
        if kind == "outputs":
            folder = job.outputs_dir / name
            if declared[name].get("jobOutputType") != "uri_file":
                folder.mkdir(parents=True, exist_ok=True)
            return str(folder)
        value = declared[name]
        if value.get("jobInputType") == "literal":
            return str(value.get("value", ""))
        uri = str(value.get("uri", ""))
        return str(self.datastore_path(uri) or uri)

    def _set_status(self, job: EmulatedJob, status: str) -> bool:
        """Move the job on and tell the publisher; a job being canceled only moves to Canceled."""
        with self._changed:
            if job.status in TERMINAL:
                return False
            if job.status == "CancelRequested" and status not in TERMINAL:
                return False
            if job.status == "CancelRequested":
                status = "Canceled"  # whatever the process did as it was stopped
            job.status = status
            job.history.append((status, time.monotonic(), time.time()))
            self._changed.notify_all()
            self._publisher.status_changed(
                job_name=job.name,
                job_type=job.job_type,
                experiment_id=self.experiment_id(job.experiment_name),
                experiment_name=job.experiment_name,
                tags=dict(job.properties.get("tags") or {}),
                properties=dict(job.properties.get("properties") or {}),
                status=status,
            )
            return True

    def _finish(self, job: EmulatedJob, status: str) -> bool:
        """Reach a terminal status once: a canceled job stays canceled whatever its process did."""
        return self._set_status(job, status)


class _Server(LoopbackServer):
    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        emulator: AzureMLEmulator,
    ) -> None:
        super().__init__(address, handler)
        self.emulator = emulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDK's session reuses its connection
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        answer = self.server.emulator.handle(self.command, self.path, raw, headers)
        payload = json.dumps(answer.body).encode() if answer.body is not None else b""
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _answer  # noqa: N815 - http.server's names

    def log_message(self, format: str, *args: Any) -> None:
        """The recorded requests are the log."""


def _job_body_problem(body: Any) -> str | None:
    """What the service would refuse with a 400, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
        return "the request body must be a JSON object with a 'properties' object"
    properties = body["properties"]
    if not isinstance(properties.get("jobType"), str):
        return "properties.jobType is required"
    if properties["jobType"] != "Command":
        return None
    if not isinstance(properties.get("command"), str) or not properties["command"].strip():
        return "properties.command is required for a command job"
    for kind, name in _PLACEHOLDER.findall(properties["command"]):
        if name not in (properties.get(kind) or {}):
            return f"the command refers to ${{{{{kind}.{name}}}}}, which the job does not declare"
    return None


def _seconds(limits: Any) -> float | None:
    """The job's timeout: `limits.timeout` is an ISO 8601 duration such as PT1H30M."""
    if not isinstance(limits, dict) or not isinstance(limits.get("timeout"), str):
        return None
    found = _DURATION.match(limits["timeout"])
    if found is None:
        return None
    days, hours, minutes, seconds = (float(part or 0) for part in found.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
