"""Operations beyond jobs, in the submission contract: register, deploy, shift traffic,
batch-score, cancel, share. A submission carries either a `job` or an `operation`.

Pure: pydantic and the standard library only, like `bridge.contracts`, which embeds these in
`Submission` and generates the JSON Schema from them. Names follow Azure ML's rules as its docs
state them, so that a bad name is refused here, naming the field, not by Azure ML minutes later.
How each completes (a call that returns, an ARM event, the sweep): docs/lifecycle.md.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator
from pydantic import model_validator as _model_validator

if TYPE_CHECKING:  # resolved when bridge.contracts, which defines it, builds `Cancel`
    from bridge.contracts import Origin

# https://learn.microsoft.com/azure/machine-learning/how-to-manage-models (asset names) and
# .../how-to-deploy-online-endpoints ("Endpoint name ... begin with an uppercase or lowercase
# letter and consist of '-'s and alphanumeric characters", 3 to 32 characters); deployment names
# follow the same rule.
_ASSET_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$"
_ENDPOINT_NAME = r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$"
_VERSION = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$"
_REGISTRY_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$"
_INSTANCE_TYPE = r"^[A-Za-z0-9_]{1,64}$"
_MODEL_REFERENCE = re.compile(
    r"^(?:azureml:)?([A-Za-z0-9][A-Za-z0-9_.-]{0,254}):([A-Za-z0-9][A-Za-z0-9_.-]{0,49})$"
)
# A model shared to a registry, as `share_model` reports it and another workspace deploys it.
_REGISTRY_MODEL = re.compile(
    r"^azureml://registries/([A-Za-z0-9][A-Za-z0-9_-]{2,32})/models/"
    r"([A-Za-z0-9][A-Za-z0-9_.-]{0,254})/versions/([A-Za-z0-9][A-Za-z0-9_.-]{0,49})$"
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")

ModelName = Annotated[str, Field(pattern=_ASSET_NAME, description="an Azure ML model name")]
EndpointName = Annotated[
    str, Field(pattern=_ENDPOINT_NAME, description="3 to 32 letters, digits and hyphens")
]
Version = Annotated[str, Field(pattern=_VERSION)]
Tags = dict[Annotated[str, Field(min_length=1, max_length=256)], str]


class _Operation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JobOutputReference(_Operation):
    """A named output of a job the bridge submitted: its name (the submitting task's job name,
    which the operator returns and pushes as its XCom) and the output's name."""

    job: Annotated[str, Field(min_length=1, max_length=255)]
    output: Annotated[str, Field(min_length=1, max_length=255)]

    @field_validator("output")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(f"output name {value!r} must be a Python identifier")
        return value


class RegisterModel(_Operation):
    """Register a model version from a job's named output or from a path."""

    kind: Literal["register_model"] = "register_model"
    name: ModelName
    type: Literal["custom_model", "mlflow_model", "triton_model"] = "custom_model"
    from_job: JobOutputReference | None = None
    path: Annotated[
        str | None,
        Field(min_length=1, description="`azureml://...`, `https://...`: where the files are"),
    ] = None
    version: Annotated[
        Version | None, Field(description="the version to create; unset: the next one")
    ] = None
    description: Annotated[str | None, Field(max_length=5000)] = None
    tags: Tags = Field(default_factory=dict)
    properties: Tags = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        # A local path would make azure-ai-ml upload from the Function App's own file system.
        if value is not None and not _URI.match(value):
            raise ValueError(f"path {value!r} must be a URI (azureml://, https://, ...)")
        return value

    @_model_validator(mode="after")
    def _one_source(self) -> RegisterModel:
        if (self.from_job is None) == (self.path is None):
            raise ValueError("give exactly one of from_job (a job's named output) and path")
        return self


class Deploy(_Operation):
    """Create or update a managed online endpoint and one deployment on it.

    `traffic` is the deployment's share in percent once it is ready; unset leaves the endpoint's
    traffic as it is (a new deployment on a live endpoint then serves nothing: blue/green starts
    at 0 %), except on a new endpoint, whose first deployment takes 100 %."""

    kind: Literal["deploy"] = "deploy"
    endpoint: EndpointName
    deployment: EndpointName
    model: Annotated[
        str,
        Field(
            description="`name:version` (or `azureml:name:version`) of this workspace, or a "
            "registry's `azureml://registries/<registry>/models/<name>/versions/<version>`"
        ),
    ]
    instance_type: Annotated[str, Field(pattern=_INSTANCE_TYPE)]
    instance_count: Annotated[int, Field(ge=1, le=1000)] = 1
    traffic: Annotated[int | None, Field(ge=0, le=100)] = None
    environment: Annotated[
        str | None, Field(min_length=1, description="unset for an MLflow model (no-code)")
    ] = None
    code: Annotated[str | None, Field(min_length=1)] = None
    scoring_script: Annotated[str | None, Field(min_length=1)] = None
    tags: Tags = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _model_reference(cls, value: str) -> str:
        if not _MODEL_REFERENCE.match(value) and not _REGISTRY_MODEL.match(value):
            raise ValueError(
                f"model {value!r} must be name:version (or azureml:name:version), or "
                "azureml://registries/<registry>/models/<name>/versions/<version>"
            )
        return value

    @_model_validator(mode="after")
    def _code_with_script(self) -> Deploy:
        if (self.code is None) != (self.scoring_script is None):
            raise ValueError("code and scoring_script go together")
        if self.code is not None and self.environment is None:
            raise ValueError("a scoring script needs an environment")
        return self

    @property
    def model_name(self) -> str:
        return self._reference()[1]

    @property
    def model_version(self) -> str:
        return self._reference()[2]

    @property
    def model_registry(self) -> str | None:
        """The registry the model comes from; None for a model of the workspace."""
        return self._reference()[0]

    def _reference(self) -> tuple[str | None, str, str]:
        shared = _REGISTRY_MODEL.match(self.model)
        if shared is not None:
            return shared.group(1), shared.group(2), shared.group(3)
        found = _MODEL_REFERENCE.match(self.model)
        assert found is not None  # checked on construction
        return None, found.group(1), found.group(2)


class SetTraffic(_Operation):
    """Shift an online endpoint's traffic: deployment name to percent, 100 in all (or empty)."""

    kind: Literal["set_traffic"] = "set_traffic"
    endpoint: EndpointName
    traffic: dict[EndpointName, Annotated[int, Field(ge=0, le=100)]]

    @field_validator("traffic")
    @classmethod
    def _whole(cls, value: dict[str, int]) -> dict[str, int]:
        total = sum(value.values())
        if value and total != 100:
            raise ValueError(f"traffic must add up to 100, not {total}")
        return value


class BatchInput(_Operation):
    type: Literal["uri_file", "uri_folder", "mltable"] = "uri_folder"
    path: Annotated[str, Field(min_length=1)]


class BatchScore(_Operation):
    """Invoke a batch endpoint. Its job takes the submission's name, so the job's run events and
    the sweep carry its outcome as they carry any job's."""

    kind: Literal["batch_score"] = "batch_score"
    endpoint: EndpointName
    deployment: EndpointName | None = None
    inputs: dict[str, BatchInput | str | int | float | bool] = Field(default_factory=dict)
    experiment_name: Annotated[str | None, Field(max_length=255)] = None

    @field_validator("inputs")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _IDENTIFIER.match(name):
                raise ValueError(f"input name {name!r} must be a Python identifier")
        return value


class Cancel(_Operation):
    """Cancel a job the bridge submitted, named by its job name or by the task that submitted it
    (`{"dag_id", "run_id", "task_id", "map_index"}`). The job's own `canceled` route fires."""

    kind: Literal["cancel"] = "cancel"
    job: Annotated[str | None, Field(min_length=1, max_length=255)] = None
    origin: Origin | None = None

    @_model_validator(mode="after")
    def _one_target(self) -> Cancel:
        if (self.job is None) == (self.origin is None):
            raise ValueError("give exactly one of job (its name) and origin (its task)")
        return self


class ShareModel(_Operation):
    """Promote a model version to an Azure ML registry (dev to prod)."""

    kind: Literal["share_model"] = "share_model"
    name: ModelName
    version: Version
    registry: Annotated[str, Field(pattern=_REGISTRY_NAME)]
    share_name: ModelName | None = None
    share_version: Version | None = None


def _operation_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("kind")
        return kind if isinstance(kind, str) else None
    return getattr(value, "kind", None)


Operation = Annotated[
    Annotated[RegisterModel, Tag("register_model")]
    | Annotated[Deploy, Tag("deploy")]
    | Annotated[SetTraffic, Tag("set_traffic")]
    | Annotated[BatchScore, Tag("batch_score")]
    | Annotated[Cancel, Tag("cancel")]
    | Annotated[ShareModel, Tag("share_model")],
    Discriminator(_operation_kind),
]
Operations = RegisterModel | Deploy | SetTraffic | BatchScore | Cancel | ShareModel
OPERATION_KINDS: tuple[str, ...] = tuple(
    str(model.model_fields["kind"].default) for model in get_args(Operations)
)
