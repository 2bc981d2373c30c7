"""The effect-once protocol: every change the bridge makes in Airflow happens once, although Event
Grid and Service Bus deliver at least once and any worker may die or lose a reply at any point.

As AWS Lambda Powertools' idempotency utility does it, each effect `(job, outcome, target)` is
**claimed** in the ledger with a conditional write before it is performed, under a **lease**
(`lease_for`); it is then **settled** (completed, or failed for good). A refusal an operator can
fix **blocks** it: unsettled, claimable again at once. A failure that may have left a request in
flight **abandons** it: marked attempted and held until that request can no longer commit
(`hold_for`). Whoever **takes over** a lapsed or attempted claim first **checks** Airflow for the
effect before acting. `Bridge` keeps the use cases; this module keeps the protocol.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.audit import Decision, decide
from bridge.effects import Effect, EffectKind
from bridge.errors import AmbiguousError, BlockedError, PermanentError, TransientError
from bridge.ledger import Busy, Claim, Ledger, Settled
from bridge.ports import Airflow

# How long blocked work is retried before it fails with its last reason: Event Grid's own window.
BLOCKED_GIVE_UP_SECONDS = 24 * 3600.0


def lease_for(function_timeout: float, request_timeout: float) -> float:
    """How long a claim is held: its holder's invocation lives at most the function's timeout,
    and the Airflow request it began last may run its own timeout past that, plus a margin."""
    return function_timeout + hold_for(request_timeout)


def hold_for(request_timeout: float) -> float:
    """How long a claim stays unusable after a request that may still be in flight failed (a
    read timeout, a lost reply): the client gave up after its timeout, the server may still commit
    for a while; the margin is that timeout again, at least 5 s. Before then, a takeover could ask
    Airflow, find nothing, and post while the first request commits."""
    return request_timeout + max(5.0, request_timeout)


class EffectOnce:
    def __init__(
        self,
        ledger: Ledger,
        airflow: Airflow,
        *,
        clock: Callable[[], float],
        lease_seconds: float = 120.0,
        ambiguity_hold: float = 0.0,
        blocked_give_up: float = BLOCKED_GIVE_UP_SECONDS,
    ) -> None:
        self.ledger = ledger
        self.airflow = airflow
        self.clock = clock
        self.lease_seconds = lease_seconds  # `lease_for`: how long a live attempt may last
        self.ambiguity_hold = ambiguity_hold  # `hold_for`: how long a request may stay in flight
        self.blocked_give_up = blocked_give_up

    def perform(
        self, effects: list[Effect], *, unsettled: list[Claim] | None = None
    ) -> tuple[int, BlockedError | None]:
        """Perform each effect once; a failure of one still lets the others happen. Returns how
        many were performed and the first block (the caller keeps the job open); raises the
        first transient failure (the transport retries).

        With `unsettled`, the claims of effects performed are put there instead of being
        settled one write each: the caller's own write settles them (`Ledger.update_job`), or
        `settle` does. Before a transient failure is raised, they are settled here."""
        performed, failure, blocked = 0, None, None
        for effect in effects:
            try:
                performed += self._once(effect, unsettled)
            except BlockedError as exc:
                blocked = blocked or exc
            except TransientError as exc:
                failure = failure or exc
        if failure is not None:
            if unsettled:
                self.settle(unsettled)
            raise failure
        return performed, blocked

    def settle(self, claims: list[Claim]) -> None:
        """Settle performed effects whose claims `perform` left to the caller, one write each;
        raises the first transient failure after trying them all (an unsettled claim's lease
        lapses, and whoever takes it over asks Airflow first)."""
        failure = None
        for claim in claims:
            try:
                self.ledger.complete(claim)
            except TransientError as exc:
                failure = failure or exc
        claims.clear()
        if failure is not None:
            raise failure

    def _once(self, effect: Effect, unsettled: list[Claim] | None = None) -> int:
        claim = self.ledger.claim(effect, self.clock(), self.lease_seconds)
        if isinstance(claim, Settled):
            summary = f"effect on {effect.target} already {claim.state}"
            decide(Decision.DUPLICATE_SKIPPED, summary, **effect.named())
            return 0
        if isinstance(claim, Busy):
            wait = max(1.0, claim.lease_until - self.clock())
            raise TransientError(f"effect {effect.id} is in progress elsewhere", retry_after=wait)
        try:
            if claim.taken_over and self._already_performed(effect, claim.since):
                decide(
                    Decision.DUPLICATE_SKIPPED,
                    f"effect on {effect.target} was performed by an earlier attempt",
                    **effect.named(),
                    reason="performed by an earlier attempt",
                )  # fmt: skip
            else:
                self._apply(effect)
        except PermanentError as exc:
            self._fail(claim, str(exc))
            return 0
        except BlockedError as exc:
            now = self.clock()
            since = claim.blocked_since or now
            if now - since >= self.blocked_give_up:
                self._fail(claim, f"blocked for {duration(now - since)}, gave up: {exc}")
                return 0
            self.ledger.block(claim, str(exc), since)
            decide(
                Decision.BLOCKED, f"effect on {effect.target} is blocked: {exc}",
                **effect.named(), reason=str(exc), cause=exc.cause,
            )  # fmt: skip
            raise
        except TransientError as exc:
            # Only a failure that surely did nothing, on a claim no earlier attempt touched, may
            # forget the attempt; otherwise the next one must check before acting, and after a
            # request that may still be in flight, not before it can no longer commit.
            if isinstance(exc, AmbiguousError):
                self.ledger.abandon(claim, self.clock() + self.ambiguity_hold)
            elif claim.taken_over:
                self.ledger.abandon(claim)
            else:
                self.ledger.release(claim)
            raise
        except BaseException:
            self.ledger.abandon(claim, self.clock() + self.ambiguity_hold)
            raise
        self._performed(claim, unsettled)
        return 1

    def _performed(self, claim: Claim, unsettled: list[Claim] | None) -> None:
        if unsettled is None:
            self.ledger.complete(claim)
        else:
            unsettled.append(claim)  # the caller's write settles it

    def _fail(self, claim: Claim, reason: str) -> None:
        self.ledger.fail(claim, reason)
        # Found by `bridge jobs --state failed-effects` and `bridge retry --all` without a scan.
        self.ledger.mark(claim.effect.fact.job_name, failed=reason[:2000])
        decide(
            Decision.REJECTED, f"effect on {claim.effect.target} failed for good: {reason}",
            **claim.effect.named(), reason=reason,
        )  # fmt: skip

    def _already_performed(self, effect: Effect, since: float) -> bool:
        """After an attempt that may have performed the effect: ask Airflow whether it did."""
        if effect.kind is EffectKind.ASSET_EVENT:
            return self.airflow.asset_event_posted(
                effect.target, effect.extra()["effect_id"], since
            )
        return False  # a DAG run's deterministic id makes Airflow refuse the second one

    def _apply(self, effect: Effect) -> None:
        if effect.kind is EffectKind.ASSET_EVENT:
            self.airflow.post_asset_event(
                effect.target, effect.extra(), partition_key=effect.fact.partition_key
            )
            decide(Decision.EFFECT_PERFORMED, f"asset event on {effect.target}", **effect.named())
        else:
            conf = {**effect.conf, "azureml": effect.extra()}
            created = self.airflow.trigger_dag_run(effect.target, effect.dag_run_id, conf)
            decide(
                Decision.EFFECT_PERFORMED if created else Decision.DUPLICATE_SKIPPED,
                f"dag run {effect.target}/{effect.dag_run_id} (new: {created})",
                **effect.named(),
                dag_run_id=effect.dag_run_id,
            )  # fmt: skip


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"
