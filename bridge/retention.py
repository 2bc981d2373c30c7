"""Retention: the ledger forgets finished jobs after a while, never one still open or blocked.

A daily timer (`retain` in function_app.py) removes every row of a job accepted more than
`BRIDGE_LEDGER_RETENTION_DAYS` ago (default 90): its record, its effects, its audit trail, its
index rows; and rejected messages received as long ago. A job still on the watch list (its outcome
not routed, an effect or a rejection still to tell) or still blocked is kept, however old.

Why 90 days: far beyond every window in which the record is still needed (Event Grid retries for
24 h, blocked work gives up after 24 h by default, the sweep's backoff tops out at an hour), and
Application Insights' default retention, so that the ledger's copy of a job's audit trail ages out
with the telemetry's. An event for a forgotten job is answered as "not the bridge's", which is
what it has become.

Cost: one read of the job index from the cutoff (old jobs only), then per forgotten job a point
read, one query of its partition (row keys only) and batched deletes of up to 100 rows each.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bridge.errors import TransientError
from bridge.ledger import Ledger

log = logging.getLogger("bridge.retention")

DEFAULT_RETENTION_DAYS = 90.0
# A run stops taking old jobs after this long; the rest go at the next run (daily).
RETENTION_BUDGET_SECONDS = 240.0


@dataclass
class RetentionReport:
    cutoff: str = ""
    actions: Counter[str] = field(default_factory=Counter)  # forgotten, kept-open, kept-blocked
    messages: int = 0  # rejected messages forgotten

    def summary(self) -> str:
        done = ", ".join(f"{count} {action}" for action, count in sorted(self.actions.items()))
        return f"before {self.cutoff}: {done or 'nothing old'}; {self.messages} message(s)"


class Retention:
    def __init__(
        self,
        ledger: Ledger,
        *,
        days: float = DEFAULT_RETENTION_DAYS,
        clock: Callable[[], float] = time.time,
        budget: float = RETENTION_BUDGET_SECONDS,
    ) -> None:
        self.ledger = ledger
        self.days = days
        self.clock = clock
        self.budget = budget

    def run(self) -> RetentionReport:
        started = time.monotonic()
        cutoff = datetime.fromtimestamp(self.clock() - self.days * 86400, UTC)
        report = RetentionReport(cutoff=cutoff.isoformat(timespec="milliseconds"))
        for name in self.ledger.accepted_before(report.cutoff):  # read page by page
            if time.monotonic() - started >= self.budget:
                report.actions["left-for-next-run"] += 1
                break
            try:
                report.actions[self._one(name)] += 1
            except TransientError as exc:  # this one waits for the next run; the rest go on
                log.warning("retention %s: %s", name, exc)
                report.actions["retry"] += 1
        report.messages = self.ledger.forget_messages(report.cutoff)
        log.info("retention: %s", report.summary())
        return report

    def _one(self, name: str) -> str:
        if self.ledger.watching(name) is not None:
            return "kept-open"
        record = self.ledger.get_job(name)
        if record is not None and (record.blocked or not record.state.finished):
            return "kept-blocked" if record.blocked else "kept-open"
        self.ledger.forget(name)
        return "forgotten"
