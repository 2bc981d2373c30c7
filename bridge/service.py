"""The bridge's two use cases, written once for every entry point (Functions, dev host, CLI).

`submit` turns a queue message into an Azure ML job; `handle` turns a run event into Airflow
effects. Both are safe to repeat: the job name is deterministic and each effect is claimed in the
ledger before it is performed. Transient failures raise (the transport redelivers); permanent ones
are recorded with their reason and answered as handled.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bridge.audit import Audit, Decision, TraceContext, current_traceparent, decide
from bridge.audit import current as current_span
from bridge.contracts import (
    TAG_DAG_ID,
    TAG_SIGNATURE,
    TAG_SUBMISSION,
    TAG_TRACEPARENT,
    Outcome,
    Route,
    Submission,
    is_job_name,
)
from bridge.effect_once import BLOCKED_GIVE_UP_SECONDS, EffectOnce, duration
from bridge.effects import Fact, plan
from bridge.errors import (
    BlockedError,
    InvalidSubmission,
    PermanentError,
    PolicyViolation,
    TransientError,
)
from bridge.events import (
    JobEvent,
    ModelEvent,
    ResourceWriteEvent,
    SecretEvent,
    normalise_status,
    outcome_of,
)
from bridge.ledger import UNBLOCKED, Claim, JobRecord, JobState, Ledger, Unblock, now_iso
from bridge.policy import Policy
from bridge.ports import Airflow, JobOutput, Jobs, Lifecycle, Provisioning, SigningKeyStore
from bridge.rotation import KeyRotation, Rotated
from bridge.runner import JOB, OperationRunner, Progress, Seen, dumps, loads
from bridge.signing import Keys, RotatingKeyring


@dataclass(frozen=True)
class Finding:
    """A job's terminal status as someone found it: an Azure ML event, or reconciliation."""

    outcome: Outcome
    status: str
    via: str  # "event" or "reconcile"
    event_id: str | None = None
    event_time: str | None = None
    experiment: str | None = None
    workspace: str | None = None
    reason: str | None = None
    outputs: Mapping[str, JobOutput] | None = None  # when the finder read the job already
    result: Mapping[str, Any] | None = None  # what an operation produced (`extra["result"]`)


# How often the reconcile timer asks Key Vault whether the signing key is due, at most.
KEY_CHECK_SECONDS = 600.0
# Blocked or deferred work is retried after `retry_base` seconds, doubling up to this.
RETRY_MAX_SECONDS = 900.0


class Result(StrEnum):
    CREATED = "created"  # a job was created
    DUPLICATE = "duplicate"  # already done before: nothing happened now
    REJECTED = "rejected"  # refused for good, recorded with the reason
    HANDLED = "handled"  # effects performed (or already performed)
    IGNORED = "ignored"  # nothing to do: progress status, a job the bridge did not submit
    BLOCKED = "blocked"  # waits on an operator's fix: not settled, retried until the deadline
    DEFERRED = "deferred"  # Azure ML refused for now (429, 5xx): the sweep resumes it
    RUNNING = "running"  # an operation's write is still under way: nothing moved


@dataclass(frozen=True)
class Report:
    result: Result
    job_name: str | None = None
    detail: str = ""
    performed: int = 0


class Bridge:
    def __init__(
        self,
        *,
        ledger: Ledger,
        jobs: Jobs,
        airflow: Airflow,
        policy: Policy,
        keys: Keys,
        workspace: str,
        lease_seconds: float = 120.0,
        ambiguity_hold: float = 0.0,
        reconcile_after: float = 600.0,
        blocked_give_up: float = BLOCKED_GIVE_UP_SECONDS,
        clock: Callable[[], float] = time.time,
        audit: Audit | None = None,
        lifecycle: Lifecycle | None = None,
        workspace_id: str | None = None,
        signing_key: SigningKeyStore | None = None,
    ) -> None:
        self.clock = clock
        # Every effect goes through the effect-once protocol; its knobs read as the bridge's own.
        self.once = EffectOnce(
            ledger,
            airflow,
            clock=self._now,
            lease_seconds=lease_seconds,
            ambiguity_hold=ambiguity_hold,
            blocked_give_up=blocked_give_up,
        )
        self.jobs = jobs
        self.policy = policy
        self.keys = keys
        # Where the signing key rotates itself (Key Vault); None: the settings' keys, by hand.
        self.signing_key = signing_key
        self._key_checked_at = float("-inf")
        self.workspace = workspace
        self.workspace_id = workspace_id  # its ARM id: which resource writes are this workspace's
        self.reconcile_after = reconcile_after  # grace before reconciliation looks at a job
        # First retry of blocked or deferred work: a minute in Azure, sooner where the sweep is.
        self.retry_base = min(reconcile_after, 60.0)
        self.audit = audit or Audit()
        # Operations beyond jobs (docs/lifecycle.md); without the port they wait for a version
        # of the bridge that has it.
        self.runner = (
            None if lifecycle is None else OperationRunner(
                lifecycle=lifecycle, jobs=jobs, ledger=lambda: self.ledger, policy=policy,
                tags=lambda submission: self._tags(submission, current_traceparent()),
            )
        )  # fmt: skip

    def _now(self) -> float:
        return self.clock()  # read late: a test or the chaos run may swap the clock

    @property
    def ledger(self) -> Ledger:
        return self.once.ledger

    @ledger.setter
    def ledger(self, ledger: Ledger) -> None:
        self.once.ledger = ledger

    @property
    def airflow(self) -> Airflow:
        return self.once.airflow

    @airflow.setter
    def airflow(self, airflow: Airflow) -> None:
        self.once.airflow = airflow

    @property
    def lease_seconds(self) -> float:
        return self.once.lease_seconds

    @lease_seconds.setter
    def lease_seconds(self, seconds: float) -> None:
        self.once.lease_seconds = seconds

    @property
    def ambiguity_hold(self) -> float:
        return self.once.ambiguity_hold

    @ambiguity_hold.setter
    def ambiguity_hold(self, seconds: float) -> None:
        self.once.ambiguity_hold = seconds

    @property
    def blocked_give_up(self) -> float:
        return self.once.blocked_give_up

    @blocked_give_up.setter
    def blocked_give_up(self, seconds: float) -> None:
        self.once.blocked_give_up = seconds

    # Airflow → Azure ML

    def submit(self, body: bytes, message_id: str, traceparent: str | None = None) -> Report:
        """One queue message. `traceparent` is the transport's (a message property), if any;
        otherwise the submission's own field continues the sender's trace."""
        parent = TraceContext.parse(traceparent)
        try:
            submission = Submission.parse(body)
        except InvalidSubmission as exc:
            with self.audit.span("submit", parent=parent, message_id=message_id):
                self.ledger.reject_message(message_id, str(exc), body)
                decide(
                    Decision.REJECTED, f"message {message_id}: {exc}",
                    message_id=message_id, reason=str(exc),
                )  # fmt: skip
            return Report(Result.REJECTED, detail=str(exc))
        parent = parent or TraceContext.parse(submission.traceparent)
        with self.audit.span("submit", parent=parent, job=submission.id, message_id=message_id):
            return self._submit(submission, message_id)

    def _submit(self, submission: Submission, message_id: str) -> Report:
        # Watched before it is recorded: whatever happens next, reconciliation will look at it.
        self.ledger.watch(submission.id, self.clock() + self.reconcile_after)
        try:
            self.policy.check(submission)
        except PolicyViolation as exc:
            return self._reject(submission, f"policy: {exc}")
        record, inserted = self.ledger.add_job(
            JobRecord(submission, JobState.ACCEPTED, traceparent=current_traceparent())
        )
        if not inserted and record.state is JobState.REJECTED:
            self.tell_rejection(record)  # finish what a crashed attempt may have left undone
            return Report(Result.DUPLICATE, submission.id, record.reason or "")
        if not inserted and record.state is not JobState.ACCEPTED:
            decide(
                Decision.DUPLICATE_SKIPPED, f"submission {submission.id} is {record.state}",
                message_id=message_id, state=record.state.value,
            )  # fmt: skip
            return Report(Result.DUPLICATE, submission.id, record.state.value)
        if inserted:
            decide(
                Decision.ACCEPTED, f"submission {submission.id} from {submission.origin.dag_id}",
                message_id=message_id, dag_id=submission.origin.dag_id,
                run_id=submission.origin.run_id, task_id=submission.origin.task_id,
            )  # fmt: skip
        return self._create(record, recovering=not inserted)

    def resume(self, record: JobRecord) -> Report:
        """Finish a submission left ACCEPTED (its worker died between record and create)."""
        return self._create(record, recovering=True)

    def _create(self, record: JobRecord, *, recovering: bool) -> Report:
        submission, traceparent = record.submission, record.traceparent
        if submission.job is None:
            return self._operate(record, recovering=recovering, via="call")
        existing = None
        try:
            existing = self.jobs.find(submission.id) if recovering else None
            created = existing or self.jobs.create(
                submission, self._tags(submission, traceparent or current_traceparent())
            )
        except PermanentError as exc:
            return self._reject(submission, f"Azure ML refused the job: {exc}")
        except TransientError as exc:
            # The submission is on record: the sweep resumes it with backoff, and the message is
            # done. An hour of throttling, or roles still propagating, costs no dead letters.
            return self._defer(submission, exc)
        # Only a resumed submission can have been blocked: the first attempt writes no more.
        unblock = UNBLOCKED if recovering else Unblock()
        moved = self.ledger.update_job(
            submission.id,
            JobState.CREATED,
            studio_url=created.studio_url,
            created_at=now_iso(),
            **unblock,
        )
        decide(
            Decision.CREATED, f"job {created.name} ({created.studio_url})",
            studio_url=created.studio_url, found=existing is not None or None,
            recorded=moved or None,
        )  # fmt: skip
        return Report(Result.CREATED, submission.id, created.studio_url or "")

    # Operations beyond jobs (docs/lifecycle.md)

    def _operate(
        self, record: JobRecord, *, recovering: bool, via: str, seen: Seen | None = None
    ) -> Report:
        """Take an operation's next step (`OperationRunner.advance`) and record where it stands;
        route its outcome once it has one. `via` says who asked: the submission ("call"), an ARM
        event ("event"), or the sweep ("reconcile")."""
        submission = record.submission
        if self.runner is None:
            return self._defer(submission, BlockedError(
                f"operation {submission.kind!r} is not supported by this deployment of the "
                "bridge: deploy a version that supports it (docs/lifecycle.md)",
                cause=BlockedError.VERSION,
            ))  # fmt: skip
        in_flight = record.state is JobState.CREATED
        try:
            progress = self.runner.advance(record, recovering=recovering, seen=seen)
        except PermanentError as exc:
            reason = (
                f"policy: {exc}" if isinstance(exc, PolicyViolation)
                else f"Azure ML refused the {submission.kind}: {exc}"
            )  # fmt: skip
            if not in_flight:
                return self._reject(submission, reason)
            # Started already: what Azure ML refuses now is the operation's failure.
            progress = Progress(Outcome.FAILED, "Failed", step=record.step, reason=reason)
        except TransientError as exc:
            if in_flight:
                raise  # the event is redelivered, or the sweep postpones with backoff
            return self._defer(submission, exc)
        return self._progressed(record, progress, via)

    def _progressed(self, record: JobRecord, progress: Progress, via: str) -> Report:
        fields: dict[str, str | float | None] = {}
        if progress.step is not None and progress.step != record.step:
            fields["step"] = progress.step
        if progress.result is not None:
            fields["result"] = dumps(progress.result)
        if progress.studio_url:
            fields["studio_url"] = progress.studio_url
        if record.created_at is None:
            fields["created_at"] = now_iso()
        unblock = UNBLOCKED if record.blocked else Unblock()
        if fields or record.state is not JobState.CREATED or record.blocked:
            self.ledger.update_job(
                record.name,
                JobState.CREATED,
                seen=record,
                settles=(),
                trail=None,
                **fields,
                **unblock,
            )
        if progress.outcome is None:
            detail = f"{progress.step}: {progress.status}"
            if record.state is JobState.CREATED and progress.step == record.step:
                return Report(Result.RUNNING, record.name, detail)
            decide(
                Decision.CREATED, f"{record.submission.kind} {record.name}: "
                f"{progress.step} {progress.status}",
                step=progress.step, status=progress.status, via=via,
            )  # fmt: skip
            if progress.step != JOB:
                # A write began: the sweep looks at it soon, then backs off from there, so a
                # deployment whose events never come waits minutes, not the job backoff's hour.
                self.ledger.postpone(record.name, self.clock() + self.retry_base, 0)
            return Report(Result.CREATED, record.name, detail)
        current = self.ledger.get_job(record.name)
        if current is None:
            raise TransientError(f"the ledger lost {record.name} while it was being routed")
        finding = Finding(
            outcome=progress.outcome, status=progress.status, via=via, reason=progress.reason,
            result=progress.result,
        )  # fmt: skip
        return self.conclude(current, finding)

    def progress(self, record: JobRecord, via: str, seen: Seen | None = None) -> Report:
        """An operation in flight may have moved on (an ARM event said so, or the sweep is due):
        read where it stands and take its next step."""
        if record.state is not JobState.CREATED or record.submission.operation is None:
            return Report(Result.IGNORED, record.name, f"{record.state.value}: not in flight")
        return self._operate(record, recovering=True, via=via, seen=seen)

    def on_resource_write(
        self, endpoint: str, deployment: str | None, event_id: str | None = None
    ) -> Report:
        """An ARM write of an online endpoint or deployment of this workspace ended (or began:
        Azure does not say which). Only a hint: the resource is read, and its submission tag
        names the operation to advance, if it is one of the bridge's in flight."""
        if self.runner is None:
            return Report(Result.IGNORED, detail="operations are not enabled")
        what = f"{endpoint}/{deployment}" if deployment else endpoint
        lifecycle = self.runner.lifecycle
        resource: Provisioning | None = (
            lifecycle.online_deployment(endpoint, deployment) if deployment
            else lifecycle.online_endpoint(endpoint)
        )  # fmt: skip
        name = resource.tags.get(TAG_SUBMISSION) if resource is not None else None
        signature = resource.tags.get(TAG_SIGNATURE, "") if resource is not None else ""
        record = self.record_of(name) if name else None
        if record is None or not self.keys.verify(record.name, signature):
            detail = f"{what}: not written by an operation of the bridge's"
            return Report(Result.IGNORED, name, detail)
        parent = TraceContext.parse(record.traceparent)
        with self.audit.span("event", parent=parent, job=record.name, event_id=event_id or ""):
            state = resource.state if resource is not None else "absent"
            decide(
                Decision.EVENT_RECEIVED, f"resource write {what}: {state}",
                event_id=event_id, resource=what, state=state,
            )  # fmt: skip
            assert resource is not None  # it named the record
            return self.progress(record, via="event", seen=Seen(endpoint, deployment, resource))

    def on_model_registered(self, event: ModelEvent) -> Report:
        """A model version registered by anyone becomes an asset event on
        `azureml://<workspace>/models/<name>`, if a DAG in Airflow has that asset."""
        uri = model_asset(self.workspace, event.model_name)
        key = f"model:{event.model_name}:{event.model_version}"
        if not self.airflow.has_asset(uri):
            return Report(Result.IGNORED, key, f"no DAG has the asset {uri}")
        fact = Fact(
            job_name=key,
            outcome=Outcome.COMPLETED,
            status="Registered",
            experiment="",
            workspace=event.workspace or self.workspace,
            studio_url=None,
            origin=None,
            event_id=event.id,
            event_time=event.time,
            traceparent=current_traceparent(),
            operation="model_registered",
            result={
                "name": event.model_name, "version": event.model_version,
                "model": f"{event.model_name}:{event.model_version}",
                "tags": dict(event.tags), "properties": dict(event.properties),
            },
        )  # fmt: skip
        with self.audit.span("event", parent=None, job=key, event_id=event.id or ""):
            route = Route(assets=(uri,))
            performed, blocked = self.once.perform(plan(fact, route))
            if blocked:
                raise blocked  # the event is redelivered; the effect's claim stays blocked
        return Report(Result.HANDLED, key, uri, performed)

    def _defer(self, submission: Submission, exc: TransientError) -> Report:
        """A recorded submission Azure ML refused for now: keep it ACCEPTED with the reason and
        leave it to the sweep's backoff, until the give-up deadline; then reject it."""
        now = self.clock()
        record = self.ledger.get_job(submission.id)
        since = (record.blocked_since if record else None) or now
        reason = _reason(exc)
        if now - since >= self.blocked_give_up:
            return self._reject(
                submission, f"gave up after {duration(now - since)} of retries: {reason}"
            )
        self.ledger.update_job(
            submission.id, JobState.ACCEPTED, blocked=reason, blocked_since=since
        )
        delay = self.retry_soon(submission.id, exc.retry_after)
        blocked = isinstance(exc, BlockedError)
        decide(
            Decision.BLOCKED if blocked else Decision.DEFERRED,
            f"submission {submission.id}: {reason}; next attempt in {delay:.0f}s",
            reason=reason, retry_in=round(delay),
        )  # fmt: skip
        return Report(Result.BLOCKED if blocked else Result.DEFERRED, submission.id, reason)

    def retry_soon(self, name: str, retry_after: float | None = None) -> float:
        """Bring the job's next sweep forward to the retry backoff (doubling per attempt, at
        least `retry_after`); returns the delay."""
        now = self.clock()
        watch = self.ledger.watching(name)
        attempts = watch.checks if watch else 0
        delay = min(self.retry_base * 2.0 ** min(attempts, 30), RETRY_MAX_SECONDS)
        delay = max(delay, retry_after or 0.0)
        if watch is None:
            self.ledger.watch(name, now + delay)
        elif now < watch.due_at <= now + delay:
            # A retry is already set, sooner: several deliveries of one outcome within seconds
            # are one attempt, not several (they would double the backoff each).
            return watch.due_at - now
        else:
            self.ledger.postpone(name, now + delay, attempts + 1)
        return delay

    def _tags(self, submission: Submission, traceparent: str | None) -> dict[str, str]:
        tags = {
            TAG_SUBMISSION: submission.id,
            TAG_SIGNATURE: self.keys.sign(submission.id),
            TAG_DAG_ID: submission.origin.dag_id,
        }
        if traceparent:
            tags[TAG_TRACEPARENT] = traceparent
        return tags

    def _reject(self, submission: Submission, reason: str) -> Report:
        record = JobRecord(
            submission, JobState.REJECTED, reason=reason, finished_at=now_iso(), via="submission"
        )
        stored, inserted = self.ledger.add_job(record)
        if not inserted and stored.state is not JobState.REJECTED:
            # Conditional: a creation that won the race keeps its CREATED (the first one wins).
            moved = self.ledger.update_job(
                submission.id,
                JobState.REJECTED,
                reason=reason,
                finished_at=now_iso(),
                via="submission",
                **UNBLOCKED,
            )
            if not moved:
                current = self.ledger.get_job(submission.id)
                state = current.state.value if current else "gone"
                return Report(Result.DUPLICATE, submission.id, state)
        decide(Decision.REJECTED, f"submission {submission.id}: {reason}", reason=reason)
        performed = self.tell_rejection(record)
        return Report(Result.REJECTED, submission.id, reason, performed)

    def tell_rejection(self, record: JobRecord) -> int:
        """A refused submission is a failure its DAG must hear of at once, on its failure route."""
        submission = record.submission
        fact = Fact(
            job_name=submission.id,
            outcome=Outcome.FAILED,
            status="Rejected",
            experiment=submission.experiment_name,
            workspace=self.workspace,
            studio_url=None,
            origin=submission.origin,
            reason=record.reason,
            via="submission",
            traceparent=current_traceparent(),
            operation=None if submission.operation is None else submission.kind,
        )
        performed, blocked = self.once.perform(plan(fact, submission.route(Outcome.FAILED)))
        if blocked:
            self.ledger.update_job(
                submission.id, JobState.REJECTED, blocked=_reason(blocked), blocked_since=None
            )
            self.retry_soon(submission.id)  # the sweep tells it again ("told")
        else:
            if record.blocked:
                self.ledger.mark(submission.id, **UNBLOCKED)
            self.ledger.unwatch(submission.id)
        return performed

    # Azure ML → Airflow

    def receive(self, event: JobEvent | ModelEvent | ResourceWriteEvent | SecretEvent) -> Report:
        """Whatever Azure announced: a job's run event, a model registered, a resource written,
        the signing key near its expiry."""
        if isinstance(event, JobEvent):
            return self.handle(event)
        if isinstance(event, SecretEvent):
            return self.on_secret_event(event)
        if isinstance(event, ModelEvent):
            return self.on_model_registered(event)
        target = event.target_in(self.workspace_id) if self.workspace_id else None
        if target is None:
            return Report(Result.IGNORED, detail=f"{event.subject}: not this workspace's")
        return self.on_resource_write(target.endpoint, target.deployment, event.id)

    def on_secret_event(self, event: SecretEvent) -> Report:
        """Key Vault's notice about a secret: the signing key's near expiry rotates it."""
        if self.signing_key is None:
            return Report(Result.IGNORED, detail="the signing key is not in Key Vault here")
        done = self._rotated(
            KeyRotation(self.signing_key, self.audit, clock=self.clock).on_event(event)
        )
        return Report(Result.HANDLED if done.rotated else Result.DUPLICATE, detail=done.detail)

    def rotate_signing_key_if_due(self) -> Report | None:
        """The reconcile timer's check of the signing key, at most every `KEY_CHECK_SECONDS`:
        rotated if due, whatever Key Vault announced or Event Grid delivered."""
        now = self.clock()
        if self.signing_key is None or now < self._key_checked_at + KEY_CHECK_SECONDS:
            return None
        self._key_checked_at = now
        done = self._rotated(KeyRotation(self.signing_key, self.audit, clock=self.clock).if_due())
        return Report(Result.HANDLED if done.rotated else Result.IGNORED, detail=done.detail)

    def _rotated(self, done: Rotated) -> Rotated:
        """After a rotation, this instance signs with the new key at once."""
        if done.rotated and isinstance(self.keys, RotatingKeyring):
            self.keys.ring(reread=True)
        return done

    def handle(self, event: JobEvent) -> Report:
        outcome = event.outcome
        if outcome is None:
            return Report(Result.IGNORED, event.job_name, f"status {event.status} is not terminal")
        record = self.record_of(event.job_name)
        if record is None:
            decide(
                Decision.IGNORED, f"event {event.id} for job {event.job_name}: not the bridge's",
                event_id=event.id, reason="not submitted by the bridge",
            )  # fmt: skip
            return Report(Result.IGNORED, event.job_name, "not submitted by the bridge")
        # The ledger's context first: a tag on an event not verified yet is only a fallback.
        parent = TraceContext.parse(record.traceparent) or TraceContext.parse(
            event.tags.get(TAG_TRACEPARENT)
        )
        with self.audit.span("event", parent=parent, job=record.name, event_id=event.id or ""):
            return self._handle(event, outcome, record)

    def _handle(self, event: JobEvent, outcome: Outcome, record: JobRecord) -> Report:
        decide(
            Decision.EVENT_RECEIVED, f"event {event.id}: {event.status}",
            event_id=event.id, event_type=event.type, status=event.status,
        )  # fmt: skip
        why = self.distrust(event, record)
        batch = record.submission.job is None and record.submission.runs_job
        if why and batch and record.state is JobState.CREATED:
            # A batch endpoint's job carries no tags of the bridge's (the invocation takes none):
            # its event is a hint to read the job from Azure ML, which is then what decides.
            return self._read_batch_job(event, record)
        if why:
            # Not trusted, but not lost either: reconciliation reads the job from Azure ML itself.
            decide(Decision.IGNORED, f"event {event.id}: {why}", event_id=event.id, reason=why)
            return Report(Result.IGNORED, event.job_name, why)
        finding = Finding(
            outcome=outcome,
            status=event.status or outcome.value.title(),
            via="event",
            event_id=event.id,
            event_time=event.time,
            experiment=event.experiment_name,
            workspace=event.workspace,
        )
        return self.conclude(record, finding)

    def _read_batch_job(self, event: JobEvent, record: JobRecord) -> Report:
        found = self.jobs.find(record.name)
        status = normalise_status(found.status or "") if found is not None else ""
        outcome = outcome_of(status)
        if found is None or outcome is None:
            detail = f"batch job {record.name} reads {status or 'absent'}: the sweep follows it"
            return Report(Result.IGNORED, record.name, detail)
        finding = Finding(
            outcome=outcome, status=status, via="event", event_id=event.id,
            event_time=event.time, experiment=event.experiment_name, outputs=found.outputs,
        )  # fmt: skip
        return self.conclude(record, finding)

    def record_of(self, job_name: str) -> JobRecord | None:
        """The ledger's record of a job, or None. A name `job_name` cannot have given is no job of
        the bridge's, and is not looked up: the ledger would refuse some as keys."""
        return self.ledger.get_job(job_name) if is_job_name(job_name) else None

    def distrust(self, event: JobEvent, record: JobRecord) -> str | None:
        """Why the event cannot be trusted to speak for the job, or None: its signature tag."""
        signature = event.tags.get(TAG_SIGNATURE)
        if not signature:
            return "event carries no signature tag"
        if not self.keys.verify(record.name, signature):
            return f"signature does not verify with key {' or '.join(self.keys.ids)}"
        return None

    def conclude(self, record: JobRecord, finding: Finding) -> Report:
        """Route a job's terminal outcome once, whoever found it (an event or reconciliation)."""
        finished = record.state.outcome
        if finished is not None:
            # The first outcome routed is the job's outcome: a late or contradicting one is not.
            if finished is finding.outcome:
                decide(
                    Decision.DUPLICATE_SKIPPED, f"job {record.name} is already {record.state}",
                    via=finding.via, state=record.state.value,
                )  # fmt: skip
                return Report(Result.DUPLICATE, record.name, f"already {record.state}")
            detail = f"already {record.state}; a later {finding.status} changes nothing"
            decide(Decision.IGNORED, f"job {record.name}: {detail}", via=finding.via, reason=detail)
            return Report(Result.IGNORED, record.name, detail)
        if record.state is JobState.REJECTED:
            detail = "the submission was rejected: no job ran"
            decide(Decision.IGNORED, f"job {record.name}: {detail}", via=finding.via, reason=detail)
            return Report(Result.IGNORED, record.name, detail)
        if record.outcome and record.outcome != finding.outcome.value:
            detail = f"{record.outcome} is being routed; a later {finding.status} changes nothing"
            decide(Decision.IGNORED, f"job {record.name}: {detail}", via=finding.via, reason=detail)
            return Report(Result.IGNORED, record.name, detail)
        return self.route(record, finding)

    def route(self, record: JobRecord, finding: Finding) -> Report:
        """Perform every effect of the finding's route that is not settled yet, then conclude
        the job; while one is blocked, the job stays open with the outcome noted (the sweep
        retries it). `bridge retry` calls this on a concluded job, after reopening effects."""
        route = record.submission.route(finding.outcome)
        fact = Fact(
            job_name=record.name,
            outcome=finding.outcome,
            status=finding.status,
            experiment=finding.experiment or record.submission.experiment_name,
            workspace=finding.workspace or self.workspace,
            studio_url=record.studio_url,
            origin=record.submission.origin,
            event_id=finding.event_id,
            event_time=finding.event_time,
            reason=finding.reason,
            via=finding.via,
            traceparent=current_traceparent(),
            outputs=self._outputs(record, finding, route),
            partition_key=record.submission.partition_key,
            operation=None if record.submission.operation is None else record.submission.kind,
            result=finding.result if finding.result is not None else loads(record.result) or None,
        )
        # The effects performed are settled by the job's conclusion, which also keeps the span's
        # records so far: one ledger write after Airflow's reply (docs/benchmarks.md).
        unsettled: list[Claim] = []
        performed, blocked = self.once.perform(plan(fact, route), unsettled=unsettled)
        if blocked:
            self.once.settle(unsettled)
            reason = _reason(blocked)
            self.ledger.update_job(
                record.name, record.state, seen=record, blocked=reason,
                outcome=finding.outcome.value, status=finding.status, via=finding.via,
                blocked_since=record.blocked_since or self.clock(),
            )  # fmt: skip
            delay = self.retry_soon(record.name, blocked.retry_after)
            detail = f"{finding.outcome.value}: {reason}; next attempt in {delay:.0f}s"
            return Report(Result.BLOCKED, record.name, detail, performed)
        unblock = UNBLOCKED if record.blocked else Unblock()
        span = current_span()
        records = span.keep_with(record.name) if span is not None else None
        try:
            moved = self.ledger.update_job(
                record.name, JobState.concluded(finding.outcome), seen=record,
                settles=unsettled, trail=records,
                finished_at=record.finished_at or now_iso(), via=record.via or finding.via,
                outcome=finding.outcome.value, status=record.status or finding.status, **unblock,
            )  # fmt: skip
        except TransientError:
            with suppress(TransientError):  # the ledger may be down: the leases then lapse
                self.once.settle(unsettled)
            raise
        if moved and span is not None:
            span.kept_by(records)
        elif not moved:
            self.once.settle(unsettled)  # another writer concluded it: settle these here
        # The job stays on the watch list until a sweep finds it due and drops it ("closed"):
        # reconciliation keeps its own index, and the event path saves a round trip.
        return Report(Result.HANDLED, record.name, finding.outcome.value, performed)

    def _outputs(
        self, record: JobRecord, finding: Finding, route: Route
    ) -> Mapping[str, JobOutput] | None:
        """Where a completed job's named outputs are, for the downstream DAG: one read of the job
        from Azure ML (events do not carry outputs), unless reconciliation just read it. Jobs
        that declare no outputs, other outcomes, and empty routes cost nothing."""
        if finding.outcome is not Outcome.COMPLETED or route.is_empty:
            return None
        if finding.outputs is not None:
            return finding.outputs
        if not record.submission.declares_outputs:
            return None
        found = self.jobs.find(record.name)
        return found.outputs if found is not None else {}

    def reject_event(self, event_id: str | None, reason: str, raw: Any) -> Report:
        """Record an event that cannot be read, so it is never silently lost; never retried."""
        body = json.dumps(raw, default=str).encode()
        key = f"event:{event_id or hashlib.sha256(body).hexdigest()}"
        self.ledger.reject_message(key, reason, body)
        decide(Decision.REJECTED, f"malformed event recorded as {key}: {reason}", reason=reason)
        return Report(Result.REJECTED, detail=reason)


def model_asset(workspace: str, model: str) -> str:
    """The asset a model's registrations reach Airflow on, whoever registered it."""
    return f"azureml://{workspace}/models/{model}"


def _reason(exc: TransientError) -> str:
    """What an operator reads: the class of a block (never a secret), then the message."""
    cause = f"[{exc.cause}] " if isinstance(exc, BlockedError) else ""
    return f"{cause}{exc}"[:2000]
