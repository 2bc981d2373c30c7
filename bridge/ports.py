"""The outside systems the core talks to, as small protocols. One adapter each in `bridge.adapters`.

Adapters translate their SDK's failures into `bridge.errors`: `TransientError` for what a retry can
fix (network, 5xx, 429, expired token), `PermanentError` for what it cannot (4xx, unknown asset).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.contracts import Submission


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
    """A model version as Azure ML registered it."""

    name: str
    version: str
    id: str  # its ARM id


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
