"""The ledger: what the bridge has accepted, created, and done, so that every effect happens once.

Modelled on AWS Lambda Powertools' idempotency records. A job record per submission; an effect
record per (job, outcome, target) that moves IN_PROGRESS (with a lease) → COMPLETED or FAILED.
Every transition is a conditional write, so two workers racing on the same event cannot both
perform it; a claim whose lease lapsed (its worker died) may be taken over.

The watch list is the secondary index that reconciliation reads: one small entry per job whose
outcome the bridge has not routed yet, with the time it is next due for a check. A job enters it
before its record is written and leaves it once its outcome is routed, so reading it costs
O(open jobs), never a scan of the ledger's history.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, TypedDict

from bridge.contracts import Outcome, Submission
from bridge.effects import Effect


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class JobState(StrEnum):
    ACCEPTED = "accepted"  # recorded; the Azure ML job may or may not exist yet
    CREATED = "created"
    REJECTED = "rejected"  # refused before any job was created; `reason` says why
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    def may_become(self, state: JobState) -> bool:
        """Whether a job in this state may move to `state`: never back. A late CREATED after the
        outcome was routed, or a rejection racing a creation, is refused (the first one wins)."""
        return state in _NEXT[self]

    @property
    def finished(self) -> bool:
        return self in _FINISHED

    @property
    def outcome(self) -> Outcome | None:
        """The outcome a concluded job's route took; None while open, and for a rejection."""
        return _OUTCOME_OF.get(self)

    @classmethod
    def concluded(cls, outcome: Outcome) -> JobState:
        """The state of a job whose outcome was routed."""
        return _STATE_OF[outcome]


_FINISHED = frozenset({JobState.REJECTED, JobState.COMPLETED, JobState.FAILED, JobState.CANCELED})
_OUTCOMES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELED})
_STATE_OF = {
    Outcome.COMPLETED: JobState.COMPLETED,
    Outcome.FAILED: JobState.FAILED,
    Outcome.CANCELED: JobState.CANCELED,
}
_OUTCOME_OF = {state: outcome for outcome, state in _STATE_OF.items()}
_NEXT: dict[JobState, frozenset[JobState]] = {
    JobState.ACCEPTED: frozenset(JobState),
    JobState.CREATED: frozenset({JobState.CREATED, *_OUTCOMES}),
    # A finished job takes field updates in its own state, nothing else. (An operator's
    # `bridge retry` of a rejected submission reopens it explicitly: `Ledger.reopen_job`.)
    **{state: frozenset({state}) for state in _FINISHED},
}


class EffectState(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"  # a permanent failure, recorded with its reason; `bridge retry` reopens it
    # Refused for a reason an operator fixes (`bridge.errors.BlockedError`): not settled, so the
    # next attempt claims it again; failed only after `blocked_since` + the give-up deadline.
    BLOCKED = "blocked"


class Unblock(TypedDict, total=False):
    """The fields that clear what a job waited on (`JobRecord.blocked`)."""

    blocked: None
    blocked_since: None


# For `update_job` and `mark`: `**UNBLOCKED`, or `**Unblock()` to leave them as they are.
UNBLOCKED: Unblock = {"blocked": None, "blocked_since": None}


@dataclass(frozen=True)
class JobRecord:
    submission: Submission
    state: JobState
    studio_url: str | None = None
    reason: str | None = None
    accepted_at: str | None = None
    created_at: str | None = None
    finished_at: str | None = None
    via: str | None = None  # who found the outcome: "event", "reconcile" or "submission"
    traceparent: str | None = None  # the span that accepted the submission (`bridge.audit`)
    # Work that waits on an operator's fix (`BlockedError`), or an ACCEPTED submission that Azure
    # ML refused for now: why, and since when (epoch seconds; the give-up deadline counts from it).
    blocked: str | None = None
    blocked_since: float | None = None
    # The outcome being routed while an effect is blocked (the job is not concluded until every
    # effect is settled), and the status it was found with: the first outcome found wins.
    outcome: str | None = None
    status: str | None = None
    failed: str | None = None  # the last reason an effect of the job failed for good
    # An operation's progress (docs/lifecycle.md): the step it is at while Azure ML works
    # (`endpoint`, `deployment`, `traffic`, `job`), and what it has fixed or found so far, as
    # JSON (a reserved model version; once done, the `result` its asset events carry).
    step: str | None = None
    result: str | None = None
    # The stored row's version when this was read: lets a transition skip reading it again.
    etag: str | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.submission.id


@dataclass(frozen=True)
class Claim:
    """The right to perform one effect, until `lease_until` (epoch seconds)."""

    effect: Effect
    etag: str
    lease_until: float
    taken_over: bool  # an earlier attempt lapsed or failed ambiguously: the effect may exist
    since: float  # when the first attempt at this effect was claimed (epoch seconds)
    blocked_since: float | None = None  # when an attempt was first blocked, if one was


@dataclass(frozen=True)
class Settled:
    """The effect was already performed (or permanently failed): nothing to do."""

    state: EffectState
    reason: str | None = None


@dataclass(frozen=True)
class Busy:
    """Another worker holds a live claim on this effect; retry after the lease."""

    lease_until: float


@dataclass(frozen=True)
class EffectRecord:
    job_name: str
    effect_id: str
    kind: str
    target: str
    state: EffectState
    reason: str | None
    updated_at: str | None
    event_id: str | None = None


@dataclass(frozen=True)
class Watch:
    """A job whose outcome the bridge has not routed yet, next due for a check at `due_at`."""

    job_name: str
    due_at: float  # epoch seconds
    checks: int  # how many times reconciliation found it still running


class Ledger(Protocol):
    def add_job(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Insert if absent. Returns the stored record and whether this call inserted it."""
        ...

    def get_job(self, name: str) -> JobRecord | None: ...

    def update_job(
        self,
        name: str,
        state: JobState,
        *,
        seen: JobRecord | None = None,
        settles: Sequence[Claim] = (),
        trail: list[dict[str, Any]] | None = None,
        **fields: str | float | None,
    ) -> bool:
        """Move a job to `state`, setting the given fields, if its stored state may become
        `state` (`JobState.may_become`); a conditional write on the record's ETag, so no state
        ever goes back. `seen`, the record as the caller read it, saves reading it again (a
        stale one costs a read). Returns whether it moved; False leaves the record as another
        writer left it (or absent).

        The same write may carry what belongs with it, so that a job's conclusion costs one
        round trip (docs/benchmarks.md): `settles`, claims of effects just performed, settled
        COMPLETED by it; `trail`, a span's audit records, kept by it (as `add_trail` would).
        Neither is written when the job does not move: the caller settles and keeps them."""
        ...

    def mark(self, name: str, **fields: str | float | None) -> None:
        """Set fields that are not the job's state (a failed effect's reason): no transition."""
        ...

    def reopen_job(self, name: str) -> bool:
        """REJECTED → ACCEPTED, for an operator's `bridge retry` after a fix; False if the job is
        not (or no longer) rejected."""
        ...

    def claim(self, effect: Effect, now: float, lease_seconds: float) -> Claim | Settled | Busy: ...

    def complete(self, claim: Claim) -> None: ...

    def fail(self, claim: Claim, reason: str) -> None: ...

    def block(self, claim: Claim, reason: str, since: float) -> None:
        """Leave the effect unsettled and claimable at once, with why, blocked since `since`."""
        ...

    def reopen(self, job_name: str, effect_id: str, now: float) -> bool:
        """A FAILED or BLOCKED effect made claimable again now, for `bridge retry` (a fresh
        give-up deadline); whether an earlier attempt may have performed it is kept."""
        ...

    def release(self, claim: Claim) -> None:
        """Give the claim up after a failure that surely did nothing: a retry starts afresh."""
        ...

    def abandon(self, claim: Claim, hold_until: float = 0.0) -> None:
        """Give the claim up after a failure that may have done the effect: the row stays, marked
        as attempted, and no one may take it over before `hold_until` (epoch seconds), when the
        request that may still be in flight can no longer commit; the next attempt then checks
        before acting."""
        ...

    def effects(self, job_name: str) -> list[EffectRecord]: ...

    def jobs(
        self,
        *,
        state: JobState | None = None,
        since: str | None = None,
        limit: int = 100,
        blocked: bool = False,
        attention: bool = False,
    ) -> list[JobRecord]:
        """Job records, newest first: for operators. Reads across every job's partition; with
        `blocked`, only jobs waiting on an operator's fix; with `attention`, those and every job
        with a failed effect or a rejected submission (what `bridge retry --all` re-drives)."""
        ...

    def blocked_reasons(self, limit: int) -> list[str]:
        """Why each blocked job waits, up to `limit`: one read of the attention index, no
        record (what `/api/health` counts, on an anonymous route)."""
        ...

    # Retention (`bridge.retention`)

    def accepted_before(self, cutoff: str) -> Iterator[str]:
        """Names of the jobs accepted before `cutoff` (ISO 8601, UTC), from the time index."""
        ...

    def forget(self, name: str) -> None:
        """Remove every row of the job: its record, effects, audit trail and index rows."""
        ...

    def forget_messages(self, before: str) -> int:
        """Remove rejected messages received before `before`; returns how many."""
        ...

    def reject_message(self, message_id: str, reason: str, body: bytes) -> None:
        """Record a message that is not a submission at all, so it is never silently lost."""
        ...

    def rejected_messages(self) -> list[dict[str, Any]]: ...

    # The audit trail (`bridge.audit`): each span's records, kept with the job

    def add_trail(self, job_name: str, entries: list[dict[str, Any]]) -> None: ...

    def trail(self, job_name: str) -> list[dict[str, Any]]:
        """Every kept audit record of the job, oldest first."""
        ...

    # The watch list (reconciliation's index of open jobs)

    def watch(self, name: str, due_at: float) -> None:
        """Put the job on the watch list unless it is there already (a resend keeps its backoff)."""
        ...

    def due(self, now: float, limit: int) -> list[Watch]:
        """Up to `limit` watched jobs due at `now`, earliest first."""
        ...

    def postpone(self, name: str, due_at: float, checks: int) -> None: ...

    def watching(self, name: str) -> Watch | None:
        """The job's watch-list entry, if its outcome is still to be routed."""
        ...

    def unwatch(self, name: str) -> None:
        """Take the job off the watch list; already gone is fine."""
        ...
