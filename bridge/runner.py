"""Operations beyond jobs, one step at a time (docs/lifecycle.md).

`OperationRunner.advance` looks at where an operation stands (the ledger's `step` and `result`,
and Azure ML itself) and takes the next step:

- `register_model` and `share_model` are one synchronous call each, `cancel` one request;
- `deploy` goes endpoint → deployment → traffic, and `set_traffic` is the traffic step alone:
  each a write Azure ML runs as a long-running operation, which the bridge starts and does not
  wait for. It is advanced again when an ARM event says a write ended, or by the sweep;
- `batch_score` invokes the batch endpoint once; from then on its job is a job like any other.

Every step is safe to take twice, because a worker may die between Azure ML's answer and the
ledger's write: a registration's version is fixed (given, or reserved in the ledger) before it is
written, and a version found carrying the submission's tag is the answer; endpoint, deployment and
traffic writes are PUTs of named resources; an invocation or a share looks first.

Pure: no SDK. Azure ML is reached through the `Lifecycle` and `Jobs` ports.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.contracts import TAG_SUBMISSION, Origin, Outcome, Submission, job_name
from bridge.errors import BlockedError, PermanentError, PolicyViolation, TransientError
from bridge.ledger import JobRecord, JobState, Ledger
from bridge.operations import (
    BatchScore,
    Cancel,
    Deploy,
    JobOutputReference,
    RegisterModel,
    SetTraffic,
    ShareModel,
)
from bridge.policy import Policy
from bridge.ports import Jobs, Lifecycle, ModelVersion, Provisioning

SUCCEEDED = "Succeeded"
# provisioningState values that end a write, and the outcome each routes.
_ENDED = {"Succeeded": Outcome.COMPLETED, "Failed": Outcome.FAILED, "Canceled": Outcome.CANCELED}

# Job statuses after which a job's outputs will never exist.
_NO_OUTPUTS = frozenset({"Failed", "Canceled"})

# Steps recorded in `JobRecord.step`.
ENDPOINT = "endpoint"
DEPLOYMENT = "deployment"
TRAFFIC = "traffic"
JOB = "job"


@dataclass(frozen=True)
class Progress:
    """What one step found: an outcome (the operation ended), or the step it now waits at."""

    outcome: Outcome | None  # None: Azure ML is still working on a write
    status: str  # Azure ML's word for it: Registered, Succeeded, Creating, Failed ...
    step: str | None = None
    result: Mapping[str, Any] | None = None  # what the next DAG needs (`extra["result"]`)
    reason: str | None = None  # why it failed, as Azure ML says
    studio_url: str | None = None


@dataclass(frozen=True)
class Seen:
    """An endpoint or deployment the caller has just read (an ARM event's hint): the step that
    would read it first takes this instead, so one event costs one read of it, not two."""

    endpoint: str
    deployment: str | None
    resource: Provisioning


class OperationRunner:
    def __init__(
        self,
        *,
        lifecycle: Lifecycle,
        jobs: Jobs,
        ledger: Callable[[], Ledger],
        policy: Policy,
        tags: Callable[[Submission], dict[str, str]],
    ) -> None:
        self.lifecycle = lifecycle
        self.jobs = jobs
        self._ledger = ledger  # read late: the bridge's ledger may be swapped (tests, chaos)
        self.policy = policy
        self.tags = tags

    @property
    def ledger(self) -> Ledger:
        return self._ledger()

    def advance(self, record: JobRecord, *, recovering: bool, seen: Seen | None = None) -> Progress:
        """Take the operation's next step. Raises `PolicyViolation` or `PermanentError` for what
        no retry changes, `TransientError` (`BlockedError`) for what one may."""
        operation = record.submission.operation
        if isinstance(operation, RegisterModel):
            return self._register(record, operation)
        if isinstance(operation, Deploy):
            return self._deploy(record, operation, seen)
        if isinstance(operation, SetTraffic):
            return self._set_traffic(record, operation, seen)
        if isinstance(operation, BatchScore):
            return self._batch_score(record, operation, recovering=recovering)
        if isinstance(operation, Cancel):
            return self._cancel(record, operation)
        if isinstance(operation, ShareModel):
            return self._share(record, operation)
        raise PermanentError(f"{record.name} carries no operation")

    # -- models ----------------------------------------------------------------------------------

    def _register(self, record: JobRecord, registration: RegisterModel) -> Progress:
        version = registration.version or loads(record.result).get("version")
        for _ in range(3):
            if version is None:
                # Reserved before the write, so that every retry writes this same version.
                version = self.lifecycle.next_model_version(registration.name)
                self.ledger.mark(record.name, result=dumps({"version": version}))
            existing = self.lifecycle.model(registration.name, version)
            if existing is None:
                if registration.from_job is not None:
                    self._check_source_job(registration.from_job)
                tags = self.tags(record.submission)
                return _registered(self.lifecycle.register_model(registration, version, tags))
            if existing.tags.get(TAG_SUBMISSION) == record.name:
                return _registered(existing)  # an earlier attempt wrote it
            if registration.version is not None:
                raise PermanentError(
                    f"model {registration.name}:{version} exists already and was not registered "
                    "by this submission: give another version, or none for the next"
                )
            version = None  # someone took the reserved version meanwhile: reserve the next
        raise TransientError(f"versions of model {registration.name} keep being taken")

    def _check_source_job(self, source: JobOutputReference) -> None:
        """A job's output exists once the job completed: a job Azure ML does not have yet, or
        one still running, blocks (and heals); one that ended otherwise never will have it."""
        job = self.jobs.find(source.job)
        if job is None:
            raise BlockedError(
                f"job {source.job} is not in Azure ML (yet): its submission may be on its way",
                cause=BlockedError.MISSING_RESOURCE,
            )
        if job.status in _NO_OUTPUTS:
            raise PermanentError(
                f"job {source.job} ended {job.status}: its output {source.output} never will exist"
            )
        if job.status != "Completed":
            raise BlockedError(
                f"job {source.job} is {job.status or 'not started'}: its output {source.output} "
                "exists once it completes",
                cause=BlockedError.MISSING_RESOURCE,
            )

    def _share(self, record: JobRecord, share: ShareModel) -> Progress:
        if self.lifecycle.model(share.name, share.version) is None:
            raise BlockedError(
                f"model {share.name}:{share.version} is not registered in the workspace (yet)",
                cause=BlockedError.MISSING_RESOURCE,
            )
        shared = self.lifecycle.share_model(share, self.tags(record.submission))
        result = {
            "registry": share.registry,
            "name": shared.name,
            "version": shared.version,
            "id": shared.id,
            "model": (
                f"azureml://registries/{share.registry}/models/{shared.name}"
                f"/versions/{shared.version}"
            ),
        }
        return Progress(Outcome.COMPLETED, "Shared", result=result)

    # -- online endpoints ------------------------------------------------------------------------

    def _deploy(self, record: JobRecord, deploy: Deploy, seen: Seen | None) -> Progress:
        step = record.step
        if step is None:
            self._check_model(deploy)
            endpoint = self.lifecycle.online_endpoint(deploy.endpoint)
            if endpoint is None:
                self.lifecycle.start_endpoint(deploy.endpoint, self.tags(record.submission))
                return Progress(None, "Creating", step=ENDPOINT)
            step = ENDPOINT
        if step == ENDPOINT:
            endpoint = self._read_endpoint(deploy.endpoint, seen)
            if endpoint is None:  # deleted meanwhile: create it again
                self.lifecycle.start_endpoint(deploy.endpoint, self.tags(record.submission))
                return Progress(None, "Creating", step=ENDPOINT)
            if endpoint.state != SUCCEEDED:
                return _unfinished(endpoint, ENDPOINT, f"endpoint {deploy.endpoint}")
            self.lifecycle.start_deployment(deploy, self.tags(record.submission))
            return Progress(None, "Creating", step=DEPLOYMENT)
        if step == DEPLOYMENT:
            deployment = self._read_deployment(deploy.endpoint, deploy.deployment, seen)
            if deployment is None:  # the write was lost: write it again
                self.lifecycle.start_deployment(deploy, self.tags(record.submission))
                return Progress(None, "Creating", step=DEPLOYMENT)
            if deployment.state != SUCCEEDED:
                what = f"deployment {deploy.endpoint}/{deploy.deployment}"
                return _unfinished(deployment, DEPLOYMENT, what)
            endpoint = self._endpoint(deploy.endpoint)
            wanted = traffic_after(endpoint.traffic, deploy.deployment, deploy.traffic)
            if wanted is None:  # nothing to write; wait for a write under way (a racing step's)
                if endpoint.state != SUCCEEDED:
                    return _unfinished(endpoint, TRAFFIC, f"endpoint {deploy.endpoint}")
                return self._deployed(deploy, endpoint)
            if endpoint.state != SUCCEEDED:  # another write is under way: ARM would refuse ours
                raise TransientError(f"endpoint {deploy.endpoint} is {endpoint.state}")
            self.lifecycle.start_traffic(deploy.endpoint, wanted, self.tags(record.submission))
            return Progress(None, "Updating", step=TRAFFIC)
        endpoint = self._endpoint(deploy.endpoint, seen)
        if endpoint.state != SUCCEEDED:
            return _unfinished(endpoint, TRAFFIC, f"endpoint {deploy.endpoint}")
        return self._deployed(deploy, endpoint)

    def _deployed(self, deploy: Deploy, endpoint: Provisioning) -> Progress:
        result = {
            "endpoint": deploy.endpoint,
            "deployment": deploy.deployment,
            "model": deploy.model,
            "scoring_uri": endpoint.scoring_uri,
            "traffic": dict(endpoint.traffic),
        }
        return Progress(Outcome.COMPLETED, SUCCEEDED, result=result)

    def _set_traffic(self, record: JobRecord, change: SetTraffic, seen: Seen | None) -> Progress:
        endpoint = self._endpoint(change.endpoint, seen)
        if record.step is None:
            for name, percent in change.traffic.items():
                if percent and self.lifecycle.online_deployment(change.endpoint, name) is None:
                    raise BlockedError(
                        f"endpoint {change.endpoint} has no deployment {name} (yet)",
                        cause=BlockedError.MISSING_RESOURCE,
                    )
            if endpoint.state != SUCCEEDED:  # another write is under way: ARM would refuse ours
                raise TransientError(f"endpoint {change.endpoint} is {endpoint.state}")
            tags = self.tags(record.submission)
            self.lifecycle.start_traffic(change.endpoint, change.traffic, tags)
            return Progress(None, "Updating", step=TRAFFIC)
        if endpoint.state != SUCCEEDED:
            return _unfinished(endpoint, TRAFFIC, f"endpoint {change.endpoint}")
        result = {
            "endpoint": change.endpoint,
            "traffic": dict(endpoint.traffic),
            "scoring_uri": endpoint.scoring_uri,
        }
        return Progress(Outcome.COMPLETED, SUCCEEDED, result=result)

    def _read_endpoint(self, name: str, seen: Seen | None) -> Provisioning | None:
        if seen is not None and seen.deployment is None and seen.endpoint == name:
            return seen.resource
        return self.lifecycle.online_endpoint(name)

    def _read_deployment(self, endpoint: str, name: str, seen: Seen | None) -> Provisioning | None:
        if seen is not None and (seen.endpoint, seen.deployment) == (endpoint, name):
            return seen.resource
        return self.lifecycle.online_deployment(endpoint, name)

    def _endpoint(self, name: str, seen: Seen | None = None) -> Provisioning:
        endpoint = self._read_endpoint(name, seen)
        if endpoint is None:
            raise BlockedError(
                f"online endpoint {name} does not exist (yet)", cause=BlockedError.MISSING_RESOURCE
            )
        return endpoint

    def _check_model(self, deploy: Deploy) -> None:
        """The model exists and carries the tags the policy requires, as Azure ML has it now."""
        model = self.lifecycle.model(deploy.model_name, deploy.model_version, deploy.model_registry)
        if model is None:
            raise BlockedError(
                f"model {deploy.model} is not registered (yet)",
                cause=BlockedError.MISSING_RESOURCE,
            )
        found = self.policy.model_tag_violations(f"{model.name}:{model.version}", model.tags)
        if found:
            raise PolicyViolation("; ".join(found))

    # -- jobs ------------------------------------------------------------------------------------

    def _batch_score(self, record: JobRecord, score: BatchScore, *, recovering: bool) -> Progress:
        result = {"endpoint": score.endpoint, "deployment": score.deployment, "job": record.name}
        found = self.jobs.find(record.name) if recovering else None
        job = found or self.lifecycle.batch_score(score, record.name)
        return Progress(None, job.status or "NotStarted", step=JOB, result=result,
                        studio_url=job.studio_url)  # fmt: skip

    def _cancel(self, record: JobRecord, cancel: Cancel) -> Progress:
        target = cancel.job if cancel.job is not None else job_name(_origin(cancel))
        job = self.ledger.get_job(target)
        if job is None:
            raise BlockedError(
                f"no job of the bridge's is named {target} (yet): its submission may be on its way",
                cause=BlockedError.MISSING_RESOURCE,
            )
        if job.state.finished:
            status = f"already {job.state.value}"
            return Progress(Outcome.COMPLETED, status, result={"job": target, "status": status})
        if job.state is JobState.ACCEPTED:
            raise TransientError(f"job {target} is not created yet; it is canceled once it is")
        self.lifecycle.cancel(target)
        return Progress(Outcome.COMPLETED, "CancelRequested", result={"job": target})


def traffic_after(
    current: Mapping[str, int], deployment: str, wanted: int | None
) -> dict[str, int] | None:
    """The endpoint's traffic once `deployment` takes `wanted` percent, or None when nothing
    changes. Unset: an endpoint serving nothing gives it all (a first deployment), any other
    stays as it is (blue/green starts at 0 %). Otherwise the others share the rest in their
    current proportions (largest remainder), so the map still adds up to 100."""
    serving = {name: percent for name, percent in current.items() if percent > 0}
    if wanted is None:
        return {deployment: 100} if not serving else None
    others = {name: percent for name, percent in serving.items() if name != deployment}
    total = sum(others.values())
    if not others:
        target = {deployment: 100} if wanted > 0 else {}
        return None if target == serving else target
    rest = 100 - wanted
    shares = {name: percent * rest / total for name, percent in others.items()}
    floors = {name: int(share) for name, share in shares.items()}
    left = rest - sum(floors.values())
    for name in sorted(shares, key=lambda n: (floors[n] - shares[n], n))[:left]:
        floors[name] += 1
    target = {name: percent for name, percent in {**floors, deployment: wanted}.items() if percent}
    return None if target == serving else target


def _unfinished(resource: Provisioning, step: str, what: str) -> Progress:
    """A write that has not succeeded: still under way, or ended in failure."""
    outcome = _ENDED.get(resource.state)
    if outcome is None:
        return Progress(None, resource.state, step=step)
    reason = f"{what} is {resource.state}" + (f": {resource.error}" if resource.error else "")
    return Progress(outcome, resource.state, step=step, reason=reason)


def _registered(model: ModelVersion) -> Progress:
    result = {"name": model.name, "version": model.version, "id": model.id,
              "model": f"{model.name}:{model.version}"}  # fmt: skip
    return Progress(Outcome.COMPLETED, "Registered", result=result)


def _origin(cancel: Cancel) -> Origin:
    assert cancel.origin is not None  # one of job and origin, checked on construction
    return cancel.origin


def loads(text: str | None) -> dict[str, Any]:
    """A record's `result` as a mapping (empty when unset)."""
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
