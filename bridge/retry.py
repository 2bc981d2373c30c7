"""`bridge retry`: after an operator's fix, re-drive what failed or is blocked, once.

What it re-drives, per job:
- effects that failed for good or are blocked: each is reopened (a fresh give-up deadline) and the
  job's outcome is routed again through the same claim protocol as an event. An effect that any
  earlier attempt may have sent (a lost reply, a lapsed lease) is still checked in Airflow before it
  is sent: reopening keeps that mark. Settled effects are not touched, so exactly once holds;
- a submission that Azure ML has refused for now (ACCEPTED, blocked or deferred): resumed now;
- a rejected submission whose reason no longer holds (a policy that was relaxed, a role that was
  granted after the deadline): reopened and submitted again. One the policy still refuses is left
  as it is, with the policy's reason.

`dry_run` says what each job would get and changes nothing. A second run after a successful one
finds nothing to do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass

from bridge.audit import Decision, Span, TraceContext, decide
from bridge.contracts import Outcome
from bridge.errors import PolicyViolation, TransientError
from bridge.ledger import EffectState, JobRecord, JobState
from bridge.service import Bridge, Finding, Result

_REDRIVABLE = (EffectState.FAILED, EffectState.BLOCKED)


@dataclass(frozen=True)
class Line:
    job: str
    was: str  # what needed the re-drive: "2 effect(s) failed", "rejected", "blocked", ...
    result: str  # the bridge's answer (handled, created, blocked, ...), "would retry", "nothing"
    detail: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


class Retrier:
    def __init__(self, bridge: Bridge, *, dry_run: bool = False) -> None:
        self.bridge = bridge
        self.dry_run = dry_run

    def candidates(
        self, names: Iterable[str] = (), *, since: str | None = None, limit: int = 1000
    ) -> list[JobRecord]:
        """The named jobs, or every job that needs attention (accepted since `since`)."""
        names = list(names)
        if names:
            found = [self.bridge.ledger.get_job(name) for name in names]
            return [record for record in found if record is not None]
        return self.bridge.ledger.jobs(attention=True, since=since, limit=limit)

    def retry(self, records: Iterable[JobRecord]) -> list[Line]:
        lines = []
        for record in records:
            try:
                lines.append(self._job(record))
            except TransientError as exc:  # still failing: said, and left for the next run
                lines.append(Line(record.name, "-", "retry", str(exc)))
        return lines

    def _job(self, record: JobRecord) -> Line:
        if record.state is JobState.REJECTED:
            return self._rejected(record)
        if record.state is JobState.ACCEPTED:
            return self._accepted(record)
        effects = [e for e in self.bridge.ledger.effects(record.name) if e.state in _REDRIVABLE]
        outcome = record.state.outcome or (Outcome(record.outcome) if record.outcome else None)
        if not effects or outcome is None:
            return Line(record.name, record.state.value, "nothing", "no failed or blocked effect")
        was = f"{len(effects)} effect(s) {'/'.join(sorted({e.state.value for e in effects}))}"
        targets = ", ".join(e.target for e in effects)
        if self.dry_run:
            return Line(record.name, was, "would retry", targets)
        with self._span(record):
            now = self.bridge.clock()
            for effect in effects:
                self.bridge.ledger.reopen(record.name, effect.effect_id, now)
            self.bridge.ledger.mark(record.name, failed=None)
            decide(Decision.REDRIVEN, f"job {record.name}: {was}: {targets}", targets=targets)
            status = record.status or outcome.value.title()
            finding = Finding(outcome, status, via=record.via or "reconcile")
            report = self.bridge.route(record, finding)
        return Line(record.name, was, report.result.value, report.detail or targets)

    def _accepted(self, record: JobRecord) -> Line:
        was = f"accepted ({record.blocked or 'not created yet'})"
        if self.dry_run:
            return Line(record.name, was, "would retry", "create the job now")
        with self._span(record):
            decide(Decision.REDRIVEN, f"submission {record.name}: create it now")
            report = self.bridge.resume(record)
        return Line(record.name, was, report.result.value, report.detail)

    def _rejected(self, record: JobRecord) -> Line:
        was = f"rejected ({record.reason or '-'})"
        try:
            self.bridge.policy.check(record.submission)
        except PolicyViolation as exc:
            return Line(record.name, was, "still rejected", f"policy: {exc}")
        if self.dry_run:
            return Line(record.name, was, "would retry", "submit again")
        with self._span(record):
            if not self.bridge.ledger.reopen_job(record.name):
                return Line(record.name, was, "nothing", "no longer rejected")
            self.bridge.ledger.watch(record.name, self.bridge.clock() + self.bridge.reconcile_after)
            decide(Decision.REDRIVEN, f"submission {record.name}: submit again after {was}")
            report = self.bridge.resume(record)
        if report.result is Result.REJECTED:
            return Line(record.name, was, "still rejected", report.detail)
        return Line(record.name, was, report.result.value, report.detail)

    def _span(self, record: JobRecord) -> AbstractContextManager[Span]:
        return self.bridge.audit.span(
            "retry", parent=TraceContext.parse(record.traceparent), job=record.name
        )


def as_json(lines: list[Line]) -> str:
    return json.dumps([line.to_json() for line in lines], indent=2)
