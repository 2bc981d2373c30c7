"""The operator's view of the ledger: which jobs the bridge holds, and one job's whole trail.

`bridge jobs` lists jobs with their state, age, origin and which routed effects are done or still
pending; `bridge show JOB` adds the submission, Azure ML's status now, every effect with its state,
time and event, the rejection reason, and the reconcile watch. Both read the ledger (and, for
`show`, one `jobs.get`); neither writes anything. `show` also gives the job's audit trail: each
call to Azure ML and Airflow and each decision, with its time, span and result.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.audit import TraceContext
from bridge.contracts import Outcome
from bridge.effects import REJECTED, EffectKind, effect_id, targets
from bridge.errors import BridgeError
from bridge.ledger import EffectRecord, EffectState, JobRecord, JobState, Ledger
from bridge.ports import Jobs


@dataclass(frozen=True)
class EffectLine:
    kind: str
    target: str
    state: str  # completed, failed, in_progress, or pending (planned, not yet claimed)
    updated_at: str | None = None
    event_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class JobLine:
    name: str
    state: str
    age_seconds: float | None
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    done: list[str] = field(default_factory=list)  # targets whose effect happened
    pending: list[str] = field(default_factory=list)  # targets planned and not done yet
    blocked: str | None = None  # what the job waits on (an operator's fix), if anything
    failed: str | None = None  # why an effect of the job failed for good, if one did


@dataclass(frozen=True)
class Trail:
    job: JobLine
    experiment: str
    job_type: str
    accepted_at: str | None
    created_at: str | None
    finished_at: str | None
    found_by: str | None  # event, reconcile or submission
    reason: str | None
    studio_url: str | None
    azureml_status: str | None  # what Azure ML says now; None when it has no such job
    azureml_error: str | None
    watch: dict[str, Any] | None  # the reconcile sweep's next check, while the job is open
    effects: list[EffectLine]
    routes: dict[str, Any]
    blocked: str | None = None  # what the job waits on, and since when (ISO 8601)
    blocked_since: str | None = None
    failed: str | None = None
    trace_id: str | None = None  # the correlation id of every record below (`bridge.audit`)
    # An operation's step in flight and what it produced or reserved (docs/lifecycle.md).
    step: str | None = None
    result: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)  # each call and decision, in order

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


TRAIL_HEADER = ("TIME", "SPAN", "RECORD", "TARGET", "RESULT", "MS", "IDENTITY")


def trail_row(entry: dict[str, Any]) -> tuple[str, ...]:
    """One audit record as a row under `TRAIL_HEADER`: a call with its status and latency, or a
    decision with its reason."""
    if entry.get("record") == "call":
        what = f"{entry.get('system')} {entry.get('operation')}"
        result = str(entry.get("status") or entry.get("error") or "")
        latency = f"{entry.get('latency_ms', '')}"
    else:
        what = str(entry.get("decision") or entry.get("record"))
        result = str(entry.get("reason") or entry.get("status") or entry.get("action")
                     or entry.get("state") or "")  # fmt: skip
        latency = ""
    span = f"{entry.get('span', '')} {str(entry.get('span_id', ''))[:8]}"
    target = str(entry.get("target") or entry.get("event_id") or entry.get("message_id") or "")
    return (str(entry.get("time", ""))[11:23], span, what, target, result[:60], latency,
            str(entry.get("identity", "")))  # fmt: skip


def job_lines(
    ledger: Ledger,
    *,
    state: JobState | None = None,
    since: str | None = None,
    limit: int = 50,
    blocked: bool = False,
    attention: bool = False,
) -> list[JobLine]:
    records = ledger.jobs(
        state=state, since=since, limit=limit, blocked=blocked, attention=attention
    )
    return [_line(record, ledger.effects(record.name)) for record in records]


def trail(ledger: Ledger, jobs: Jobs | None, name: str) -> Trail | None:
    """One job's trail, or None when the ledger has no such job."""
    record = ledger.get_job(name)
    if record is None:
        return None
    effects = ledger.effects(name)
    status, error = None, None
    if jobs is not None and record.submission.runs_job and record.state is not JobState.REJECTED:
        try:
            found = jobs.find(name)
            status = found.status if found else None
            error = None if found else "Azure ML has no job of this name"
        except BridgeError as exc:
            error = str(exc)
    # A routed job's row waits for the next sweep to drop it: reconciliation has nothing to do.
    watch = None if record.state.finished else ledger.watching(name)
    submission = record.submission
    traced = TraceContext.parse(record.traceparent)
    return Trail(
        job=_line(record, effects),
        experiment=submission.experiment_name,
        job_type=submission.kind,
        accepted_at=record.accepted_at,
        created_at=record.created_at,
        finished_at=record.finished_at,
        found_by=record.via,
        reason=record.reason,
        studio_url=record.studio_url,
        azureml_status=status,
        azureml_error=error,
        watch=None if watch is None else {"due_at": _iso(watch.due_at), "checks": watch.checks},
        effects=_effect_lines(record, effects),
        routes={
            "on": submission.on.model_dump(),
            "trigger": submission.trigger.model_dump(),
        },
        blocked=record.blocked,
        blocked_since=_iso(record.blocked_since) if record.blocked_since else None,
        failed=record.failed,
        trace_id=traced.trace_id if traced else None,
        records=ledger.trail(name),
        step=record.step,
        result=json.loads(record.result) if record.result else None,
    )


def _line(record: JobRecord, effects: list[EffectRecord]) -> JobLine:
    origin = record.submission.origin
    done = [e.target for e in effects if e.state is EffectState.COMPLETED]
    planned = _planned(record)
    settled = {
        e.effect_id for e in effects if e.state in (EffectState.COMPLETED, EffectState.FAILED)
    }
    pending = [target for eid, _, target in planned if eid not in settled]
    return JobLine(
        name=record.name,
        state=record.state.value,
        age_seconds=_age(record.accepted_at),
        dag_id=origin.dag_id,
        run_id=origin.run_id,
        task_id=origin.task_id,
        map_index=origin.map_index,
        done=done,
        pending=pending,
        blocked=record.blocked,
        failed=record.failed,
    )


def _effect_lines(record: JobRecord, effects: list[EffectRecord]) -> list[EffectLine]:
    lines = [
        EffectLine(e.kind, e.target, e.state.value, e.updated_at, e.event_id, e.reason)
        for e in effects
    ]
    known = {e.effect_id for e in effects}
    lines += [
        EffectLine(kind.value, target, "pending")
        for eid, kind, target in _planned(record)
        if eid not in known
    ]
    return lines


def _planned(record: JobRecord) -> list[tuple[str, EffectKind, str]]:
    # A rejection is told on the failed route; an open job whose effect blocked names its outcome.
    if record.state is JobState.REJECTED:
        outcome: Outcome | None = Outcome.FAILED
    else:
        outcome = record.state.outcome or (Outcome(record.outcome) if record.outcome else None)
    if outcome is None:
        return []  # still open: which route it takes is not known yet
    route = record.submission.route(outcome)
    key = REJECTED if record.state is JobState.REJECTED else outcome.value
    return [(effect_id(key, kind, target), kind, target) for kind, target in targets(route)]


def _age(accepted_at: str | None) -> float | None:
    if not accepted_at:
        return None
    return (datetime.now(UTC) - datetime.fromisoformat(accepted_at)).total_seconds()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
