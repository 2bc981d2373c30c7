"""The governance policy a submission must satisfy before any job is created or any operation
started.

A platform team sets it once (`BRIDGE_POLICY`, JSON); every violation is listed in one
`PolicyViolation`, so a DAG author fixes them all at once. Unset fields allow anything. Job rules
apply to jobs; the operation rules to operations (docs/lifecycle.md); routes to both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bridge.contracts import CommandJob, Submission, YamlJob, describe
from bridge.errors import ConfigurationError, PolicyViolation
from bridge.operations import (
    OPERATION_KINDS,
    Deploy,
    RegisterModel,
    ShareModel,
)


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_job_types: tuple[str, ...] = ("command", "pipeline", "sweep")
    allowed_computes: tuple[str, ...] | None = None
    # Prefixes, e.g. "azureml:approved-" or "azureml://registries/platform/".
    allowed_environments: tuple[str, ...] | None = None
    max_instance_count: int = Field(default=10, ge=1)
    max_timeout_seconds: int | None = Field(default=None, ge=1)
    # Prefixes of asset URIs a submission may route to, and DAG ids it may trigger.
    allowed_asset_prefixes: tuple[str, ...] | None = None
    allowed_trigger_dags: tuple[str, ...] | None = None
    required_tags: tuple[str, ...] = ()
    # Operations: which kinds may run, on which endpoints (names), on which instance types (and
    # at most `max_instance_count` instances), for which models (name prefixes), to which
    # registries; and the tags a model must carry before it is deployed: a value, or null for
    # "present with any value" (for example {"evaluation": "passed"}).
    allowed_operations: tuple[str, ...] = OPERATION_KINDS
    allowed_endpoints: tuple[str, ...] | None = None
    allowed_instance_types: tuple[str, ...] | None = None
    allowed_model_prefixes: tuple[str, ...] | None = None
    allowed_registries: tuple[str, ...] | None = None
    required_model_tags: dict[str, str | None] = Field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str | None) -> Policy:
        if not text:
            return cls()
        try:
            return cls.model_validate(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"BRIDGE_POLICY is not JSON: {exc.msg}") from exc
        except ValidationError as exc:
            raise ConfigurationError(f"BRIDGE_POLICY is invalid: {describe(exc)}") from exc

    def check(self, submission: Submission) -> None:
        violations = self.violations(submission)
        if violations:
            raise PolicyViolation("; ".join(violations))

    def violations(self, submission: Submission) -> list[str]:
        if submission.job is None:
            return self._operation_violations(submission) + self._route_violations(submission)
        job = _JobFacts.of(submission)
        found = []
        if job.type not in self.allowed_job_types:
            found.append(
                f"job type {job.type!r} is not allowed ({', '.join(self.allowed_job_types)})"
            )
        if self.allowed_computes is not None:
            computes = self.allowed_computes
            found += [f"{where}compute {compute!r} is not allowed"
                      for where, compute in job.computes if compute not in computes]  # fmt: skip
        if self.allowed_environments is not None:
            prefixes = self.allowed_environments
            found += [f"{where}environment {environment!r} is not allowed"
                      for where, environment in job.environments
                      if not (environment and environment.startswith(prefixes))]  # fmt: skip
        if job.instance_count > self.max_instance_count:
            found.append(
                f"instance_count {job.instance_count} exceeds the maximum {self.max_instance_count}"
            )
        if self.max_timeout_seconds is not None and (
            job.timeout is None or job.timeout > self.max_timeout_seconds
        ):
            found.append(f"timeout must be set and at most {self.max_timeout_seconds} seconds")
        found += [f"required tag {tag!r} is missing" for tag in self.required_tags
                  if tag not in job.tags]  # fmt: skip
        found += self._route_violations(submission)
        return found

    def _operation_violations(self, submission: Submission) -> list[str]:
        operation = submission.work
        kind = submission.kind
        if kind not in self.allowed_operations:
            return [f"operation {kind!r} is not allowed ({', '.join(self.allowed_operations)})"]
        found: list[str] = []
        endpoint, allowed = getattr(operation, "endpoint", None), self.allowed_endpoints
        if endpoint and allowed is not None and endpoint not in allowed:
            found.append(f"endpoint {endpoint!r} is not allowed")
        models = [operation.name] if isinstance(operation, RegisterModel | ShareModel) else []
        if isinstance(operation, Deploy):
            models.append(operation.model_name)
        if isinstance(operation, ShareModel) and operation.share_name:
            models.append(operation.share_name)
        if self.allowed_model_prefixes is not None:
            found += [f"model {name!r} is not allowed" for name in models
                      if not name.startswith(self.allowed_model_prefixes)]  # fmt: skip
        if isinstance(operation, Deploy):
            found += self._deployment_violations(operation)
        registry = (
            operation.registry if isinstance(operation, ShareModel)
            else operation.model_registry if isinstance(operation, Deploy)
            else None
        )  # fmt: skip
        allowed_registries = self.allowed_registries
        if registry and allowed_registries is not None and registry not in allowed_registries:
            found.append(f"registry {registry!r} is not allowed")
        return found

    def _deployment_violations(self, deploy: Deploy) -> list[str]:
        found = []
        if (
            self.allowed_instance_types is not None
            and deploy.instance_type not in self.allowed_instance_types
        ):
            found.append(f"instance type {deploy.instance_type!r} is not allowed")
        if deploy.instance_count > self.max_instance_count:
            found.append(
                f"instance_count {deploy.instance_count} exceeds the maximum "
                f"{self.max_instance_count}"
            )
        allowed, environment = self.allowed_environments, deploy.environment
        if allowed is not None and environment and not environment.startswith(allowed):
            found.append(f"environment {environment!r} is not allowed")
        return found

    def model_tag_violations(self, model: str, tags: Mapping[str, str]) -> list[str]:
        """What the model about to be deployed lacks of `required_model_tags` (its tags are read
        from Azure ML when the deployment starts)."""
        found = []
        for tag, wanted in self.required_model_tags.items():
            if tag not in tags:
                found.append(f"model {model} lacks the required tag {tag!r}")
            elif wanted is not None and tags[tag] != wanted:
                found.append(
                    f"model {model} has tag {tag}={tags[tag]!r}, the policy requires {wanted!r}"
                )
        return found

    def _route_violations(self, submission: Submission) -> list[str]:
        found = []
        if self.allowed_asset_prefixes is not None:
            uris = [*submission.on.completed, *submission.on.failed, *submission.on.canceled]
            found += [f"asset {uri!r} is not allowed" for uri in uris
                      if not uri.startswith(self.allowed_asset_prefixes)]  # fmt: skip
        if self.allowed_trigger_dags is not None:
            triggers = [*submission.trigger.completed, *submission.trigger.failed,
                        *submission.trigger.canceled]  # fmt: skip
            found += [f"triggering DAG {t.dag_id!r} is not allowed" for t in triggers
                      if t.dag_id not in self.allowed_trigger_dags]  # fmt: skip
        return found


class _JobFacts(BaseModel):
    """What the policy looks at, read alike from a typed command job or a YAML job mapping.

    A pipeline runs its steps where each says, or on `settings.default_compute`: every compute and
    environment it names is checked, each labelled with the step (`jobs.train: `).
    """

    type: str
    computes: list[tuple[str, str | None]]  # (where, compute name)
    environments: list[tuple[str, str | None]]
    instance_count: int
    timeout: int | None
    tags: dict[str, Any]

    @classmethod
    def of(cls, submission: Submission) -> _JobFacts:
        job = submission.job
        assert isinstance(job, CommandJob | YamlJob)  # the policy reads operations elsewhere
        if isinstance(job, CommandJob):
            return cls(type="command", computes=[("", job.compute)],
                       environments=[("", job.environment)],
                       instance_count=job.instance_count, timeout=job.timeout_seconds,
                       tags=job.tags)  # fmt: skip
        spec = job.spec
        resources = spec.get("resources") if isinstance(spec.get("resources"), dict) else {}
        limits = spec.get("limits") if isinstance(spec.get("limits"), dict) else {}
        computes, environments = _placements(spec)
        return cls(
            type=job.job_type,
            computes=computes,
            environments=environments,
            instance_count=int((resources or {}).get("instance_count") or 1),
            timeout=_int_or_none((limits or {}).get("timeout")),
            tags=spec["tags"] if isinstance(spec.get("tags"), dict) else {},
        )


def _placements(spec: dict[str, Any]) -> tuple[list[Placement], list[Placement]]:
    """Where a YAML job runs and on what: its own compute and environment, or its steps'."""
    steps = spec.get("jobs") if isinstance(spec.get("jobs"), dict) else None
    if spec.get("type") != "pipeline" or not steps:
        trial = spec.get("trial") if isinstance(spec.get("trial"), dict) else {}
        environment = _text(spec.get("environment")) or _text((trial or {}).get("environment"))
        return [("", _compute_name(spec.get("compute")))], [("", environment)]
    settings = spec.get("settings") if isinstance(spec.get("settings"), dict) else {}
    default = (settings or {}).get("default_compute") or spec.get("compute")
    computes: list[Placement] = []
    environments: list[Placement] = []
    for name, found in steps.items():
        step = found if isinstance(found, dict) else {}
        where = f"jobs.{name}: "
        computes.append((where, _compute_name(step.get("compute") or default)))
        environments.append((where, _text(step.get("environment"))))
    return computes, environments


Placement = tuple[str, str | None]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _compute_name(compute: Any) -> str | None:
    if not isinstance(compute, str):
        return None
    return compute.removeprefix("azureml:")


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
