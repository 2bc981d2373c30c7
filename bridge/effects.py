"""Routing: from one terminal fact about a job to the effects its submission asked for.

An `Effect` is one change in Airflow (an asset event, or a DAG run) with a stable identity: the
job, the outcome and the target. The ledger claims that identity before the effect is performed,
so a redelivered or doubled event (RunCompleted plus RunStatusChanged(Completed)) performs nothing
twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bridge.contracts import Origin, Outcome, Route
from bridge.ports import JobOutput

REJECTED = "rejected"


class EffectKind(StrEnum):
    ASSET_EVENT = "asset"
    DAG_RUN = "dagrun"


@dataclass(frozen=True)
class Fact:
    """What happened to a job, with everything the asset event's `extra` reports."""

    job_name: str
    outcome: Outcome
    status: str  # Completed, Failed, Canceled, or Rejected for a submission the bridge refused
    experiment: str
    workspace: str
    studio_url: str | None
    origin: Origin | None  # None for what no task submitted (a model someone registered)
    event_id: str | None = None
    event_time: str | None = None
    reason: str | None = None
    via: str = "event"  # who found the outcome: "event", "reconcile", or "submission"
    traceparent: str | None = None  # the span that routed it: the downstream run continues it
    # The job's named outputs as Azure ML reports them (None: not read, the job declared none).
    outputs: Mapping[str, JobOutput] | None = None
    partition_key: str | None = None  # the submission's: every asset event of the job gets it
    # An operation's kind and what it produced (docs/lifecycle.md): `extra["result"]`.
    operation: str | None = None
    result: Mapping[str, Any] | None = None

    @property
    def route_key(self) -> str:
        """What names this fact's effects: its outcome, or "rejected" for a refused submission,
        so that a submission re-driven after a fix still reports its job's own failure."""
        return REJECTED if self.via == "submission" else self.outcome.value

    def extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "job_name": self.job_name,
            "status": self.status,
            "experiment": self.experiment,
            "studio_url": self.studio_url,
            "workspace": self.workspace,
            "event_id": self.event_id,
            "event_time": self.event_time,
            "submission_id": self.job_name,
            "origin": None if self.origin is None else self.origin.model_dump(),
            "via": self.via,
        }
        if self.reason:
            extra["reason"] = self.reason
        if self.traceparent:
            extra["traceparent"] = self.traceparent
        if self.partition_key is not None:
            extra["partition_key"] = self.partition_key
        if self.operation is not None:
            extra["operation"] = self.operation
        if self.result is not None:
            extra["result"] = dict(self.result)
        if self.outputs is not None:
            extra["outputs"] = {
                name: {"type": output.type, "uri": output.uri}
                for name, output in sorted(self.outputs.items())
            }
        return extra


@dataclass(frozen=True)
class Effect:
    fact: Fact
    kind: EffectKind
    target: str  # an asset URI or a DAG id
    conf: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return effect_id(self.fact.route_key, self.kind, self.target)

    @property
    def dag_run_id(self) -> str:
        """Deterministic, so Airflow itself refuses a second run (409) if all else failed."""
        return f"azureml__{self.fact.job_name}__{self.fact.route_key}"

    def extra(self) -> dict[str, Any]:
        return {**self.fact.extra(), "effect_id": f"{self.fact.job_name}/{self.id}"}

    def named(self) -> dict[str, str]:
        """How the audit trail names this effect."""
        return {"effect": self.id, "kind": self.kind.value, "target": self.target}


def effect_id(route_key: str, kind: EffectKind, target: str) -> str:
    """Stable across redeliveries; also a valid Table Storage row key (no / \\ # ?). The route
    key is an outcome's value, or "rejected" (`Fact.route_key`)."""
    digest = hashlib.sha256(target.encode()).hexdigest()[:24]
    return f"{route_key}-{kind.value}-{digest}"


def targets(route: Route) -> list[tuple[EffectKind, str]]:
    """The (kind, target) of every effect a route asks for, each once, in `plan`'s order."""
    assets = [(EffectKind.ASSET_EVENT, uri) for uri in dict.fromkeys(route.assets)]
    dags = dict.fromkeys(trigger.dag_id for trigger in route.triggers)
    return assets + [(EffectKind.DAG_RUN, dag_id) for dag_id in dags]


def plan(fact: Fact, route: Route) -> list[Effect]:
    """Every effect of one fact, each target once, in the order the submission listed them."""
    confs: dict[str, dict[str, Any]] = {}
    for trigger in route.triggers:
        confs.setdefault(trigger.dag_id, dict(trigger.conf))  # the first trigger of a DAG wins
    return [Effect(fact, kind, target, confs.get(target, {}) if kind is EffectKind.DAG_RUN else {})
            for kind, target in targets(route)]  # fmt: skip
