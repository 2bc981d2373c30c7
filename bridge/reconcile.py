"""Reconciliation, the safety net under the events: every outcome reaches Airflow even when Azure ML
never says so.

Azure ML may send no terminal event at all (public material shows none for Canceled, and
RunStatusChanged coverage is unclear), and Event Grid may dead-letter what it did send. So a timer
sweeps the watch list, the ledger's index of jobs whose outcome is not routed yet:

- a job is first due `reconcile_after` seconds after it was accepted, then backs off (doubling) to
  at most `max_backoff` between checks while it runs;
- each due job is read once from Azure ML; a terminal status is routed through `Bridge.conclude`,
  the same effect-once path as an event, with the same effect ids: whichever comes second, the
  event or the sweep, changes nothing;
- a submission stuck in ACCEPTED is resumed; a rejection not yet told is told; a job Azure ML no
  longer knows is reported on its `failed` route with status `NotFound`.

Cost: one read of the watch list per sweep (O(open jobs)), then per due job one ledger read, one
Azure ML GET and one ledger write. See docs/reconciliation.md for calls per hour against a poller's.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from bridge.audit import Decision, TraceContext, decide
from bridge.contracts import Outcome
from bridge.errors import BridgeError, TransientError
from bridge.events import normalise_status
from bridge.ledger import JobRecord, JobState, Watch
from bridge.service import Bridge, Finding, Result

log = logging.getLogger("bridge.reconcile")

MAX_BACKOFF_SECONDS = 3600.0
SWEEP_LIMIT = 500  # jobs per sweep; the rest are due at the next one
NOT_FOUND = "NotFound"
_OUTCOMES = {"Completed": Outcome.COMPLETED, "Failed": Outcome.FAILED, "Canceled": Outcome.CANCELED}


@dataclass
class SweepReport:
    """What one sweep did, by job: `concluded`, `running`, `resumed`, `told`, `missing`, ..."""

    due: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    jobs: dict[str, str] = field(default_factory=dict)  # job name -> what was done

    def note(self, name: str, action: str) -> None:
        self.actions[action] += 1
        self.jobs[name] = action

    def summary(self) -> str:
        done = ", ".join(f"{count} {action}" for action, count in sorted(self.actions.items()))
        return f"{self.due} due: {done or 'nothing to do'}"


class Reconciler:
    def __init__(
        self,
        bridge: Bridge,
        *,
        max_backoff: float = MAX_BACKOFF_SECONDS,
        limit: int = SWEEP_LIMIT,
    ) -> None:
        self.bridge = bridge
        self.max_backoff = max_backoff
        self.limit = limit

    def sweep(self) -> SweepReport:
        """Check each due job once; a failure on one leaves it due and the sweep goes on."""
        report = SweepReport()
        watched = self.bridge.ledger.due(self.bridge.clock(), self.limit)
        report.due = len(watched)
        for watch in watched:
            try:
                action = self._check(watch)
            except TransientError as exc:
                action = "retry"
                log.warning("reconcile %s: will retry at the next sweep: %s", watch.job_name, exc)
            except BridgeError as exc:
                action = "error"
                log.error("reconcile %s: %s", watch.job_name, exc)
            report.note(watch.job_name, action)
        log.info("reconcile sweep: %s", report.summary())
        return report

    def _check(self, watch: Watch) -> str:
        ledger = self.bridge.ledger
        record = ledger.get_job(watch.job_name)
        if record is None:
            # Watched, never recorded: its submission is still being redelivered, or was refused
            # before it was recorded. Either way there is nothing to reconcile yet.
            if watch.checks >= 1:
                ledger.unwatch(watch.job_name)
                return "forgotten"
            return self._postpone(watch, "unrecorded")
        parent = TraceContext.parse(record.traceparent)
        with self.bridge.audit.span("reconcile", parent=parent, job=record.name):
            action = self._check_recorded(watch, record)
            if action != "closed":  # a routed job's row dropped: bookkeeping, not a finding
                decide(Decision.RECONCILED, f"job {record.name}: {action}", action=action)
            return action

    def _check_recorded(self, watch: Watch, record: JobRecord) -> str:
        ledger = self.bridge.ledger
        if record.state is JobState.REJECTED:
            self.bridge.tell_rejection(record)
            return "told"
        if record.state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELED):
            ledger.unwatch(record.name)  # routed by an event, which leaves the unwatch to us
            return "closed"
        if record.state is JobState.ACCEPTED:
            report = self.bridge.resume(record)
            if report.result is Result.REJECTED:
                return "rejected"
            return self._postpone(watch, "resumed")
        return self._read(watch, record)

    def _read(self, watch: Watch, record: JobRecord) -> str:
        found = self.bridge.jobs.find(record.name)
        if found is None:
            reason = f"Azure ML has no job named {record.name}: it was deleted or never ran"
            finding = Finding(Outcome.FAILED, NOT_FOUND, via="reconcile", reason=reason)
            self.bridge.conclude(record, finding)
            self.bridge.ledger.unwatch(record.name)
            log.warning("reconcile %s: %s", record.name, reason)
            return "missing"
        status = normalise_status(found.status or "")
        outcome = _OUTCOMES.get(status)
        if outcome is None:
            return self._postpone(watch, "running")
        finding = Finding(outcome, status, via="reconcile", outputs=found.outputs)
        report = self.bridge.conclude(record, finding)
        self.bridge.ledger.unwatch(record.name)
        log.info("reconcile %s: %s (%s)", record.name, status, report.result.value)
        return "concluded"

    def _postpone(self, watch: Watch, action: str) -> str:
        delay = min(self.bridge.reconcile_after * 2 ** min(watch.checks, 30), self.max_backoff)
        due_at = self.bridge.clock() + delay
        self.bridge.ledger.postpone(watch.job_name, due_at, watch.checks + 1)
        log.info("reconcile %s: %s; next check in %.0fs", watch.job_name, action, delay)
        return action
