"""Submission contract v1: what a DAG task sends, and the names derived from it.

Pure: pydantic and the standard library only. The JSON Schema in `schemas/submission.v1.json` is
generated from these models (`bridge schema`) and checked in; a test keeps the two equal.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from bridge.errors import InvalidSubmission
from bridge.operations import Cancel, Operation, Operations

SCHEMA_ID: Literal["bridge.submission/v1"] = "bridge.submission/v1"
# Service Bus Standard takes 256 KiB per message; leave room for properties and headers.
MAX_SUBMISSION_BYTES = 192 * 1024
# Tag names carry no dots: Event Grid advanced filters cannot address dotted keys.
TAG_SUBMISSION = "bridge_submission"
TAG_SIGNATURE = "bridge_signature"
TAG_DAG_ID = "bridge_dag_id"
# The W3C trace context of the bridge's span that created the job (see `bridge.audit`).
TAG_TRACEPARENT = "bridge_traceparent"
# Every job name ends so, and the Event Grid subscription filters on `subjectEndsWith` it: the
# subject (`experiments/{id}/runs/{job name}`) is an envelope field whose spelling Azure fixes,
# unlike the tags key in `data` (`runTags` or `RunTags`), which a filter would have to name.
JOB_NAME_SUFFIX = "-airflow"

_NAME_PREFIX_LENGTH = 40
_NAME_HASH_LENGTH = 20
_ASSET_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$|^[^\s:]\S*$")
_INPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Outcome(StrEnum):
    """The terminal facts a submission can route on."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Origin(_Model):
    """The Airflow task instance that sent the submission."""

    dag_id: Annotated[str, Field(min_length=1, max_length=250)]
    run_id: Annotated[str, Field(min_length=1, max_length=250)]
    task_id: Annotated[str, Field(min_length=1, max_length=250)]
    map_index: int = -1
    # 0 until a person clears the task instance; then the try number it was cleared at
    # (`max_tries - retries`, which Airflow resets on a clear and leaves alone on a retry). A
    # clear asks for a new job; an automatic retry must not make one (docs/dags.md).
    cleared: Annotated[int, Field(ge=0)] = 0

    @model_serializer(mode="wrap")
    def _without_cleared_zero(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Left out until set, so a Function App older than the field still takes the
        submissions of an upgraded operator (its Origin forbids unknown fields)."""
        data: dict[str, Any] = handler(self)
        if not self.cleared:
            data.pop("cleared", None)
        return data


Cancel.model_rebuild(_types_namespace={"Origin": Origin})


class JobInput(_Model):
    """A data input: an Azure ML URI (`azureml://...`, `https://...`) or, locally, a path."""

    type: Literal["uri_file", "uri_folder", "mltable", "mlflow_model", "custom_model"] = (
        "uri_folder"
    )
    path: Annotated[str, Field(min_length=1)]
    mode: (
        Literal["ro_mount", "rw_mount", "download", "direct", "eval_mount", "eval_download"] | None
    ) = None


class JobOutput(_Model):
    type: Literal["uri_file", "uri_folder", "mltable", "mlflow_model", "custom_model"] = (
        "uri_folder"
    )
    path: str | None = None
    mode: Literal["rw_mount", "upload", "direct"] | None = None


Literal_ = str | int | float | bool


class CommandJob(_Model):
    """A command job, the common case, spelled out so that the policy and the schema can see it."""

    kind: Literal["command"] = "command"
    command: Annotated[str, Field(min_length=1, max_length=32_000)]
    environment: Annotated[
        str, Field(min_length=1, description="`azureml:name:version` or `name:version`")
    ]
    compute: Annotated[str, Field(min_length=1)]
    inputs: dict[str, Literal_ | JobInput] = Field(default_factory=dict)
    outputs: dict[str, JobOutput] = Field(default_factory=dict)
    experiment_name: Annotated[str | None, Field(max_length=255)] = None
    display_name: Annotated[str | None, Field(max_length=255)] = None
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    environment_variables: dict[str, str] = Field(default_factory=dict)
    instance_count: Annotated[int, Field(ge=1, le=1000)] = 1
    timeout_seconds: Annotated[int | None, Field(ge=1)] = None

    @property
    def job_type(self) -> str:
        return "command"

    @field_validator("inputs", "outputs")
    @classmethod
    def _names_are_identifiers(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _INPUT_NAME.match(name):
                raise ValueError(f"input/output name {name!r} must be a Python identifier")
        return value


class YamlJob(_Model):
    """Any job in Azure ML's own YAML job schema, as a mapping (read by `azure.ai.ml.load_job`)."""

    kind: Literal["yaml"] = "yaml"
    spec: dict[str, Any]

    @field_validator("spec")
    @classmethod
    def _has_a_type(cls, spec: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(spec.get("type", "command"), str):
            raise ValueError("spec.type must be a string such as 'command', 'pipeline' or 'sweep'")
        return spec

    @property
    def job_type(self) -> str:
        return str(self.spec.get("type", "command"))


def _job_kind(value: Any) -> str | None:
    """`kind` may be left out: a job without it is a command job."""
    if isinstance(value, dict):
        return str(value.get("kind", "command"))
    return getattr(value, "kind", None)


Job = Annotated[
    Annotated[CommandJob, Tag("command")] | Annotated[YamlJob, Tag("yaml")],
    Discriminator(_job_kind),
]


class Trigger(_Model):
    """A DAG run to start when the job reaches an outcome."""

    dag_id: Annotated[str, Field(min_length=1, max_length=250)]
    conf: dict[str, Any] = Field(default_factory=dict)


class AssetRoutes(_Model):
    """`on`: asset URIs that receive an event per outcome."""

    completed: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    canceled: list[str] = Field(default_factory=list)

    @field_validator("completed", "failed", "canceled")
    @classmethod
    def _are_uris(cls, uris: list[str]) -> list[str]:
        for uri in uris:
            if not _ASSET_URI.match(uri):
                raise ValueError(f"{uri!r} is not an asset URI")
        return uris


class TriggerRoutes(_Model):
    """`trigger`: DAG runs to start per outcome."""

    completed: list[Trigger] = Field(default_factory=list)
    failed: list[Trigger] = Field(default_factory=list)
    canceled: list[Trigger] = Field(default_factory=list)


class Route(_Model):
    """Everything one outcome of one job leads to."""

    assets: tuple[str, ...] = ()
    triggers: tuple[Trigger, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.assets and not self.triggers


class Submission(_Model):
    """One Azure ML job, or one operation on models and endpoints, and where its result should
    go. The wire format of the submission queue."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["bridge.submission/v1"] = Field(default=SCHEMA_ID, alias="schema")
    origin: Origin
    job: Job | None = None
    operation: Annotated[
        Operation | None,
        Field(description="instead of `job`: register, deploy, set_traffic, batch_score, "
              "cancel or share_model (docs/lifecycle.md)"),
    ] = None  # fmt: skip
    on: AssetRoutes = Field(default_factory=AssetRoutes)
    trigger: TriggerRoutes = Field(default_factory=TriggerRoutes)
    partition_key: Annotated[
        str | None,
        Field(
            max_length=250,
            pattern=r"\S",
            description="Partition of the asset events this job's outcome posts (Airflow 3.2+ "
            "partitioned assets); the operator renders it from a template such as {{ ds }}",
        ),
    ] = None
    traceparent: Annotated[
        str | None,
        Field(
            max_length=256,
            description="W3C trace context of the sending task: the bridge continues this trace",
        ),
    ] = None

    @model_validator(mode="after")
    def _job_or_operation(self) -> Submission:
        if (self.job is None) == (self.operation is None):
            raise ValueError("give exactly one of job and operation")
        return self

    @model_serializer(mode="wrap")
    def _without_the_absent_one(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`job` or `operation`, whichever is absent, is left out: a job's submission stays what
        a Function App older than operations takes (its Submission forbids unknown fields)."""
        data: dict[str, Any] = handler(self)
        for key in ("job", "operation"):
            if data.get(key, ...) is None:
                del data[key]
        return data

    @property
    def id(self) -> str:
        """The submission id, which is also the Azure ML job name (of a job, or a batch
        scoring's job), and the ledger's key for an operation."""
        return job_name(self.origin)

    @property
    def kind(self) -> str:
        """What it asks for: the job's type (command, pipeline, sweep ...) or the operation's
        kind."""
        return self.job.job_type if self.job is not None else self.work.kind

    @property
    def work(self) -> CommandJob | YamlJob | Operations:
        """The job or the operation, whichever it carries."""
        work = self.job if self.job is not None else self.operation
        assert work is not None  # checked on construction
        return work

    @property
    def runs_job(self) -> bool:
        """Whether an Azure ML job carries it: a job's, or a batch scoring's (named like one)."""
        return self.job is not None or self.kind == "batch_score"

    @property
    def declares_outputs(self) -> bool:
        """Whether the job names outputs of its own (then its completion reports where they are)."""
        if isinstance(self.job, CommandJob):
            return bool(self.job.outputs)
        if isinstance(self.job, YamlJob):
            return bool(self.job.spec.get("outputs"))
        return self.kind == "batch_score"  # its deployment's outputs (`score`)

    @property
    def experiment_name(self) -> str:
        """The job's experiment; defaults to the DAG id (the SDK would use the folder's name)."""
        if isinstance(self.job, CommandJob):
            declared = self.job.experiment_name
        elif isinstance(self.job, YamlJob):
            declared = self.job.spec.get("experiment_name")
        else:
            declared = getattr(self.operation, "experiment_name", None)
        return str(declared or self.origin.dag_id)

    def route(self, outcome: Outcome) -> Route:
        return Route(
            assets=tuple(getattr(self.on, outcome.value)),
            triggers=tuple(getattr(self.trigger, outcome.value)),
        )

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_defaults=False)

    @classmethod
    def parse(cls, body: bytes | str) -> Submission:
        """Parse a message body; any failure is an `InvalidSubmission` naming the problem."""
        raw = body.encode() if isinstance(body, str) else body
        if len(raw) > MAX_SUBMISSION_BYTES:
            raise InvalidSubmission(
                f"submission is {len(raw)} bytes; the limit is {MAX_SUBMISSION_BYTES}"
            )
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidSubmission(f"submission is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidSubmission("submission must be a JSON object")
        if data.get("schema") != SCHEMA_ID:
            raise InvalidSubmission(
                f"unsupported schema {data.get('schema')!r}; expected {SCHEMA_ID!r}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidSubmission(f"submission is invalid: {describe(exc)}") from exc


def describe(exc: ValidationError) -> str:
    """One line per problem, each naming the field: what a user needs to fix the submission."""
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(root)"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


def job_name(origin: Origin) -> str:
    """A valid, readable, deterministic Azure ML job name for one Airflow task instance.

    The DAG id gives a readable prefix; a hash of the whole origin makes it unique, so a resent
    submission (or a retried task) names the same job and never creates a second one, while a
    task a person cleared names a new one (`Origin.cleared`). The suffix
    marks the job as the bridge's for the Event Grid subscription's subject filter.
    """
    parts = [origin.dag_id, origin.run_id, origin.task_id, str(origin.map_index)]
    if origin.cleared:  # never cleared: the name every earlier version gave
        parts.append(f"cleared={origin.cleared}")
    key = "\x1f".join(parts)
    digest = hashlib.sha256(key.encode()).hexdigest()[:_NAME_HASH_LENGTH]
    prefix = re.sub(r"[^a-z0-9_]+", "_", origin.dag_id.lower()).strip("_")[:_NAME_PREFIX_LENGTH]
    if not prefix or not prefix[0].isalpha():
        prefix = f"job_{prefix}".rstrip("_")
    return f"{prefix}-{digest}{JOB_NAME_SUFFIX}"


_JOB_NAME = re.compile(
    rf"[a-z][a-z0-9_]{{0,{_NAME_PREFIX_LENGTH + 3}}}-[0-9a-f]{{{_NAME_HASH_LENGTH}}}"
    + re.escape(JOB_NAME_SUFFIX)
)


def is_job_name(name: str) -> bool:
    """Whether `job_name` could have given this name: anything else is no job of the bridge's,
    and is never looked up (nor used as a ledger key, which would refuse some characters)."""
    return _JOB_NAME.fullmatch(name) is not None


def json_schema() -> dict[str, Any]:
    schema = Submission.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    return schema
