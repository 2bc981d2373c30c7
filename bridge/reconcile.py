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
  longer knows is reported on its `failed` route with status `NotFound`;
- an operation in flight (a deployment, a traffic change: docs/lifecycle.md) is advanced as an
  ARM write event would advance it: its resource's `provisioningState` is read; each new write is
  first read a minute after it began (`Bridge.retry_base`), then with backoff to five minutes;
- a job whose outcome is known but one of whose effects is blocked (a wrong secret, a consumer DAG
  not deployed yet) is routed again from the ledger, without reading Azure ML.

A sweep never stalls: whatever one job's check raises postpones that job alone, with backoff;
checks run a few at a time (they wait on Azure ML and the ledger), and a sweep takes no new job
after its time budget, well inside the function's timeout.

Cost: one read of the watch list per sweep (O(open jobs)), then per due job one ledger read, one
Azure ML GET and one ledger write. See docs/reconciliation.md for calls per hour against a poller's.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from bridge.audit import Decision, TraceContext, decide
from bridge.contracts import Outcome
from bridge.errors import BlockedError, TransientError, first_line
from bridge.events import normalise_status, outcome_of
from bridge.ledger import UNBLOCKED, JobRecord, JobState, Watch
from bridge.service import Bridge, Finding, Result

log = logging.getLogger("bridge.reconcile")

MAX_BACKOFF_SECONDS = 3600.0
# An operation's write in flight (a deployment: minutes) is read at most this far apart.
OPERATION_MAX_BACKOFF_SECONDS = 300.0
SWEEP_LIMIT = 1000  # jobs per sweep; the rest are due at the next one
# A sweep stops taking due jobs after this long (the rest are due at the next one): well inside
# the Function App's timeout (host.json functionTimeout, 5 minutes), which would kill it mid-job.
SWEEP_BUDGET_SECONDS = 120.0
# Due jobs checked at once: each check waits on Azure ML and the ledger, not on this CPU.
SWEEP_CONCURRENCY = 8
NOT_FOUND = "NotFound"
_BLOCKED_OR_DEFERRED = {Result.BLOCKED: "blocked", Result.DEFERRED: "deferred"}


@dataclass
class SweepReport:
    """What one sweep did, by job: `concluded`, `running`, `resumed`, `told`, `missing`, ..."""

    due: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    jobs: dict[str, str] = field(default_factory=dict)  # job name -> what was done
    seconds: float = 0.0

    def note(self, name: str, action: str) -> None:
        self.actions[action] += 1
        self.jobs[name] = action

    def summary(self) -> str:
        done = ", ".join(f"{count} {action}" for action, count in sorted(self.actions.items()))
        return f"{self.due} due: {done or 'nothing to do'} in {self.seconds:.1f}s"


class Reconciler:
    def __init__(
        self,
        bridge: Bridge,
        *,
        max_backoff: float = MAX_BACKOFF_SECONDS,
        limit: int = SWEEP_LIMIT,
        budget: float = SWEEP_BUDGET_SECONDS,
        concurrency: int = SWEEP_CONCURRENCY,
    ) -> None:
        self.bridge = bridge
        self.max_backoff = max_backoff
        self.limit = limit
        self.budget = budget
        self.concurrency = max(1, concurrency)

    def sweep(self) -> SweepReport:
        """Check each due job once, a bounded number at a time, until the time budget is spent.
        Whatever one job's check raises postpones that job alone; the sweep goes on."""
        started = time.monotonic()
        report = SweepReport()
        self._signing_key()
        watched = self.bridge.ledger.due(self.bridge.clock(), self.limit)
        report.due = len(watched)
        pending = iter(watched)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="reconcile") as pool:
            running: dict[Future[str], Watch] = {}
            while True:
                while len(running) < self.concurrency and time.monotonic() - started < self.budget:
                    watch = next(pending, None)
                    if watch is None:
                        break
                    running[pool.submit(self._guarded, watch)] = watch
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    report.note(running.pop(future).job_name, future.result())
        report.seconds = time.monotonic() - started
        left = report.due - len(report.jobs)
        if left:
            log.warning("reconcile sweep: time budget spent; %d due job(s) left for the next", left)
        log.info("reconcile sweep: %s", report.summary())
        return report

    def _signing_key(self) -> None:
        """The signing key, rotated if due: its failure is logged and waits for the next sweep."""
        try:
            done = self.bridge.rotate_signing_key_if_due()
        except Exception as exc:  # the jobs' sweep goes on whatever Key Vault answers
            log.warning("reconcile: the signing key was not checked: %s", first_line(exc))
            return
        if done is not None and done.result is Result.HANDLED:
            log.info("reconcile: signing key rotated: %s", done.detail)

    def _guarded(self, watch: Watch) -> str:
        try:
            return self._check(watch)
        except BlockedError as exc:
            log.warning("reconcile %s: blocked, will retry: %s", watch.job_name, exc)
            return self._postpone(watch, "blocked")
        except TransientError as exc:
            log.warning("reconcile %s: will retry: %s", watch.job_name, exc)
            return self._postpone(watch, "retry")
        except Exception as exc:
            # Not ours to judge here (a bug, a payload no one foresaw): this job alone waits,
            # with backoff, so it is not first in line again at every sweep.
            log.exception("reconcile %s: %s", watch.job_name, first_line(exc))
            try:
                return self._postpone(watch, "error")
            except Exception:  # the ledger itself is failing: the job stays due as it was
                return "error"

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
            if record.blocked:  # concluded by an instance that read the job before it blocked
                ledger.mark(record.name, **UNBLOCKED)
            ledger.unwatch(record.name)  # routed by an event, which leaves the unwatch to us
            return "closed"
        if record.state is JobState.ACCEPTED:
            report = self.bridge.resume(record)
            if report.result is Result.REJECTED:
                return "rejected"
            if report.result in _BLOCKED_OR_DEFERRED:
                return _BLOCKED_OR_DEFERRED[report.result]  # `retry_soon` set its next check
            return self._postpone(watch, "resumed")
        if record.outcome:
            # Its outcome is known and some effect was blocked: route it again, no read needed.
            status = record.status or record.outcome.title()
            finding = Finding(Outcome(record.outcome), status, via=record.via or "reconcile")
            return self._concluded(record, finding, "retried")
        if not record.submission.runs_job:
            return self._advance(watch, record)
        return self._read(watch, record)

    def _advance(self, watch: Watch, record: JobRecord) -> str:
        """An operation in flight (a deployment, a traffic change): read where its write stands,
        as an ARM event would have made the bridge do, and take the next step."""
        report = self.bridge.progress(record, via="reconcile")
        if report.result is Result.CREATED:
            return "advanced"  # a new write began, and the bridge set the next check
        if report.result is Result.RUNNING:
            base = self.bridge.retry_base
            delay = min(base * 2 ** min(watch.checks, 30), OPERATION_MAX_BACKOFF_SECONDS)
            due_at = self.bridge.clock() + delay
            self.bridge.ledger.postpone(watch.job_name, due_at, watch.checks + 1)
            return "running"
        if report.result is Result.BLOCKED:
            return "blocked"  # still open, and `retry_soon` set its next check
        self.bridge.ledger.unwatch(record.name)
        return "concluded"

    def _read(self, watch: Watch, record: JobRecord) -> str:
        found = self.bridge.jobs.find(record.name)
        if found is None:
            reason = f"Azure ML has no job named {record.name}: it was deleted or never ran"
            finding = Finding(Outcome.FAILED, NOT_FOUND, via="reconcile", reason=reason)
            log.warning("reconcile %s: %s", record.name, reason)
            return self._concluded(record, finding, "missing")
        status = normalise_status(found.status or "")
        outcome = outcome_of(status)
        if outcome is None:
            return self._postpone(watch, "running")
        finding = Finding(outcome, status, via="reconcile", outputs=found.outputs)
        return self._concluded(record, finding, "concluded")

    def _concluded(self, record: JobRecord, finding: Finding, action: str) -> str:
        report = self.bridge.conclude(record, finding)
        if report.result is Result.BLOCKED:
            return "blocked"  # still open, and `retry_soon` set its next check
        self.bridge.ledger.unwatch(record.name)
        log.info("reconcile %s: %s (%s)", record.name, finding.status, report.result.value)
        return action

    def _postpone(self, watch: Watch, action: str) -> str:
        delay = min(self.bridge.reconcile_after * 2 ** min(watch.checks, 30), self.max_backoff)
        due_at = self.bridge.clock() + delay
        self.bridge.ledger.postpone(watch.job_name, due_at, watch.checks + 1)
        log.info("reconcile %s: %s; next check in %.0fs", watch.job_name, action, delay)
        return action
