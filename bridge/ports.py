"""The outside systems the core talks to, as small protocols. One adapter each in `bridge.adapters`.

Adapters translate their SDK's failures into `bridge.errors`: `TransientError` for what a retry can
fix (network, 5xx, 429, expired token), `PermanentError` for what it cannot (4xx, unknown asset).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.contracts import Submission
from bridge.operations import BatchScore, Deploy, RegisterModel, ShareModel
from bridge.signing import Keyring


@dataclass(frozen=True)
class JobOutput:
    """One named output of a job as Azure ML reports it. `uri` is None where Azure ML leaves it
    empty (public recordings show that for outputs declared without a path)."""

    type: str | None
    uri: str | None


@dataclass(frozen=True)
class CreatedJob:
    """What Azure ML answered for a job the bridge created (or found already created)."""

    name: str
    status: str | None
    studio_url: str | None
    outputs: Mapping[str, JobOutput] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersion:
    """A model version as Azure ML (a workspace or a registry) holds it."""

    name: str
    version: str
    id: str  # its ARM id (in a registry: azureml://registries/<registry>/models/<name>/versions/<v>)
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Provisioning:
    """An online endpoint or deployment as Azure ML reports it: where its last write stands.

    `state` is ARM's `provisioningState`: Creating, Updating, Scaling (deployments), Deleting,
    Succeeded, Failed, Canceled."""

    name: str
    state: str
    tags: Mapping[str, str] = field(default_factory=dict)
    scoring_uri: str | None = None  # endpoints
    traffic: Mapping[str, int] = field(default_factory=dict)  # endpoints: deployment -> percent
    error: str | None = None  # what Azure ML says went wrong, when it says


class Lifecycle(Protocol):
    """Azure ML operations beyond jobs, on one workspace (and the registries it may share to).

    Writes that Azure ML runs as long-running operations (endpoints, deployments, traffic) are
    started and not waited for: `start_*` returns once Azure ML accepted the write, and the
    outcome is read later with `online_endpoint` / `online_deployment` (after an ARM event, or
    by the sweep).
    Every call raises `bridge.errors` as `Jobs` does; a resource that does not exist reads None.
    """

    def model(self, name: str, version: str, registry: str | None = None) -> ModelVersion | None:
        """The model version (the workspace's, or a registry's), with its tags and properties, or
        None."""
        ...

    def next_model_version(self, name: str) -> str:
        """The version the next registration of `name` would get ("1" for a new model)."""
        ...

    def register_model(
        self, registration: RegisterModel, version: str, tags: Mapping[str, str]
    ) -> ModelVersion:
        """Register exactly this version (one synchronous PUT), with `tags` added to its own."""
        ...

    def online_endpoint(self, name: str) -> Provisioning | None:
        """The online endpoint, or None."""
        ...

    def start_endpoint(self, name: str, tags: Mapping[str, str]) -> None:
        """Create the online endpoint (key auth, no traffic); returns without waiting."""
        ...

    def online_deployment(self, endpoint: str, name: str) -> Provisioning | None:
        """The online deployment, or None."""
        ...

    def start_deployment(self, deploy: Deploy, tags: Mapping[str, str]) -> None:
        """Create or update the deployment; returns without waiting."""
        ...

    def start_traffic(
        self, endpoint: str, traffic: Mapping[str, int], tags: Mapping[str, str]
    ) -> None:
        """Write the endpoint back with this traffic map (and `tags` added to its own);
        returns without waiting."""
        ...

    def batch_score(self, score: BatchScore, job_name: str) -> CreatedJob:
        """Invoke the batch endpoint; its job is named `job_name`."""
        ...

    def cancel(self, name: str) -> None:
        """Ask Azure ML to cancel the job (done when the service accepted it); `PermanentError`
        if there is no such job."""
        ...

    def share_model(self, share: ShareModel, tags: Mapping[str, str]) -> ModelVersion:
        """Copy a model version into a registry; returns the registry's version (an existing
        target version is the answer, not an error)."""
        ...


class Jobs(Protocol):
    """Azure ML jobs of one workspace."""

    def create(self, submission: Submission, tags: Mapping[str, str]) -> CreatedJob:
        """Create the submission's job under `submission.id`, with these tags added to its own."""
        ...

    def find(self, name: str) -> CreatedJob | None:
        """The job of that name, or None. Used only to recover an interrupted submission."""
        ...


class Airflow(Protocol):
    """The effects the bridge has on Airflow, through its REST API."""

    def post_asset_event(
        self, uri: str, extra: Mapping[str, Any], partition_key: str | None = None
    ) -> None:
        """Record an asset event (of one partition, if given); `PermanentError` if no DAG
        references the asset."""
        ...

    def asset_event_posted(self, uri: str, effect_id: str, since: float) -> bool:
        """Whether an event with `extra.effect_id == effect_id` exists, posted at `since` (epoch
        seconds) or later. Asked only when an earlier attempt may have posted it.

        Raises `TransientError` when Airflow cannot tell yet: 3.3.2 answers 500 to an event listing
        that holds an event whose run is still queued (apache/airflow#71360).
        """
        ...

    def trigger_dag_run(self, dag_id: str, run_id: str, conf: Mapping[str, Any]) -> bool:
        """Start a DAG run with this id; False when a run with that id already existed."""
        ...

    def has_asset(self, uri: str) -> bool:
        """Whether a parsed DAG references the asset (only then can it take events)."""
        ...


@dataclass(frozen=True)
class KeyVersion:
    """One version of the signing key in its store: never the key itself."""

    version: str
    kid: str  # `bridge.signing.key_id` of its value
    created: float  # epoch seconds
    expires: float | None  # epoch seconds; None: the version never expires


class SigningKeyStore(Protocol):
    """Where the signing key lives and rotates: Key Vault (`bridge.adapters.keyvault`)."""

    secret: str  # the secret's name

    def keyring(self) -> Keyring:
        """The newest enabled version signs; every enabled version not expired verifies."""
        ...

    def current(self) -> KeyVersion: ...

    def rotate(self, replaces: KeyVersion) -> KeyVersion:
        """Write a new version (a fresh key expiring in `KEY_LIFETIME_DAYS`); the new one."""
        ...
