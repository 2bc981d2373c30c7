"""The ledger on Azure Table Storage (`azure-data-tables`); Azurite locally.

Layout: partition = job name. Row "job" is the job record; one row per effect, keyed by the
effect's id; one row per audit span, keyed "trail-<time>-<span id>" (`bridge.audit`). Rejected
non-submissions live in partition "rejected-messages". The watch list is partition "open-jobs",
one row per job whose outcome is not routed yet (row key = job name): Table Storage has no
secondary index, so this partition is one, and reading it costs O(open jobs). Inserts are
insert-if-absent (409 means someone was first) and updates carry the ETag they read (412 means
someone changed it since): no check-then-write races.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from bridge.contracts import Submission
from bridge.effects import Effect
from bridge.errors import TransientError
from bridge.ledger import (
    Busy,
    Claim,
    EffectRecord,
    EffectState,
    JobRecord,
    JobState,
    Settled,
    Watch,
    now_iso,
)
from bridge.ledger.transport import KeptAliveTransport

JOB_ROW = "job"
TRAIL_PREFIX = "trail-"  # sorts after every effect id (canceled-, completed-, failed-, rejected-)
REJECTED_PARTITION = "rejected-messages"
WATCH_PARTITION = "open-jobs"
# Secondary indexes (Table Storage has none of its own), so that listing jobs and retention never
# scan every row of the table, trail rows included:
# - one row per job, keyed by its acceptance time inverted (newest first) and its name;
INDEX_PARTITION = "jobs-by-time"
# - one row per job that ever needed an operator: blocked, an effect failed, or rejected.
ATTENTION_PARTITION = "attention"
_INVERT_MS = 10**13 - 1  # epoch milliseconds stay below this until the year 2286
# A string property holds at most 64 KiB (32K UTF-16 characters); a submission may be larger.
_CHUNK = 30_000
_MAX_CHUNKS = 7
POOL_CONNECTIONS = 32  # to the table's host: one per concurrent invocation
# On the job's row: the effects its conclusion settled (comma-separated ids), and the audit records
# of the span that concluded it, in at most this many chunks (the submission takes up to seven;
# an entity holds 1 MiB). A longer trail gets a row of its own.
SETTLED = "settled"
ROW_TRAIL = "trail_"
_ROW_TRAIL_CHUNKS = 3
_CLAIM_FIELDS = ["RowKey", "state", "reason", "lease_until", "first_claimed_at", "attempted",
                 "blocked_since", SETTLED]  # fmt: skip
_EFFECT_FIELDS = ["RowKey", "kind", "target", "state", "reason", "updated_at", "event_id",
                  "finished_at", SETTLED]  # fmt: skip
_TRAIL_FIELDS = [
    "RowKey",
    *(f"entries_{i}" for i in range(_MAX_CHUNKS)),
    *(f"{ROW_TRAIL}{i}" for i in range(_ROW_TRAIL_CHUNKS)),
]


class TableLedger:
    def __init__(self, client: TableClient) -> None:
        self._table = client
        self._created = False

    @classmethod
    def from_endpoint(cls, endpoint: str, table: str, credential: TokenCredential) -> TableLedger:
        service = TableServiceClient(endpoint=endpoint, credential=credential, **_transport())
        return cls(service.get_table_client(table))

    @classmethod
    def from_connection_string(cls, connection_string: str, table: str) -> TableLedger:
        return cls(
            TableClient.from_connection_string(connection_string, table_name=table, **_transport())
        )

    def ensure_table(self) -> None:
        if not self._created:
            with _transient("create the ledger table"), suppress(ResourceExistsError):
                self._table.create_table()
            self._created = True

    # Jobs

    def add_job(self, record: JobRecord) -> tuple[JobRecord, bool]:
        self.ensure_table()
        accepted_at = record.accepted_at or now_iso()
        record = dataclasses.replace(record, accepted_at=accepted_at)
        entity = {"PartitionKey": record.name, "RowKey": JOB_ROW, **_job_fields(record)}
        with _transient("record the submission"):
            try:
                self._insert(entity)
                inserted = True
            except ResourceExistsError:
                inserted = False
        if inserted:
            self._index(record.name, accepted_at)
            if record.state is JobState.REJECTED:
                self._flag(record.name, accepted_at, {}, JobState.REJECTED)
            return record, True
        existing = self.get_job(record.name)
        if existing is None:  # forgotten in between (retention): the sender retries
            raise TransientError(f"job record {record.name} vanished while being read")
        if existing.state is JobState.ACCEPTED and existing.accepted_at:
            self._index(
                existing.name, existing.accepted_at
            )  # a resend of an unfinished one: repair what a crash left out
        return existing, False

    def _index(self, name: str, accepted_at: str) -> None:
        """The job's row in the time index (an upsert: its key is the job's own, so resending
        it is harmless)."""
        entity = {
            "PartitionKey": INDEX_PARTITION,
            "RowKey": _index_key(accepted_at, name),
            "job": name,
            "accepted_at": accepted_at,
        }
        with _transient("index a job"):
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def _flag(
        self,
        name: str,
        accepted_at: str | None,
        fields: Mapping[str, str | float | None],
        state: JobState | None,
    ) -> None:
        """Keep the attention index in step with what a write just set: blocked, failed, or
        rejected (and reopened). Writes only where one of those changed: never on the hot path."""
        changed: dict[str, Any] = {
            key: "" if fields[key] is None else str(fields[key])[:1000]
            for key in ("blocked", "failed")
            if key in fields
        }
        if state is JobState.REJECTED or state is JobState.ACCEPTED:
            changed["rejected"] = state is JobState.REJECTED
        if not changed:
            return
        entity = {"PartitionKey": ATTENTION_PARTITION, "RowKey": name, **changed}
        if accepted_at:
            entity["accepted_at"] = accepted_at
        with _transient("flag a job for attention"):
            self._table.upsert_entity(entity, mode=UpdateMode.MERGE)

    def get_job(self, name: str) -> JobRecord | None:
        self.ensure_table()
        with _transient("read a job record"):
            try:
                entity = self._table.get_entity(name, JOB_ROW)
            except ResourceNotFoundError:
                return None
        return _job_record(entity)

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
        return self._transition(
            name, lambda stored: stored.may_become(state), state, fields,
            seen=seen, settles=settles, trail=trail,
        )  # fmt: skip

    def mark(self, name: str, **fields: str | float | None) -> None:
        entity: dict[str, str | float] = {"PartitionKey": name, "RowKey": JOB_ROW}
        entity |= {key: "" if value is None else value for key, value in fields.items()}
        with _transient("mark a job record"):
            try:
                self._table.update_entity(entity, mode=UpdateMode.MERGE)
            except ResourceNotFoundError:
                return
        self._flag(name, None, fields, None)

    def reopen_job(self, name: str) -> bool:
        return self._transition(
            name,
            lambda stored: stored is JobState.REJECTED,
            JobState.ACCEPTED,
            {"reason": "", "finished_at": "", "via": "", "blocked": "", "blocked_since": ""},
        )

    def _transition(
        self,
        name: str,
        allowed: Callable[[JobState], bool],
        state: JobState,
        fields: Mapping[str, str | float | None],
        *,
        seen: JobRecord | None = None,
        settles: Sequence[Claim] = (),
        trail: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Check the move against the record (as the caller saw it, else read now), write it
        only if nobody wrote in between (If-Match); on a lost race read again and decide again.

        A job's first conclusion (an open job moving to an outcome) also settles `settles` and
        keeps `trail` on its own row: the hot path's last round trip. Any other move that
        carries them settles and keeps them with writes of their own (rare: an operator's retry
        of a concluded job)."""
        self.ensure_table()
        values = {key: "" if value is None else value for key, value in fields.items()}
        trail_text = json.dumps(trail, default=str) if trail else ""
        known: tuple[JobState, str | None, str | None] | None = (
            (seen.state, seen.etag, seen.accepted_at) if seen and seen.etag else None
        )
        while True:
            if known is None:
                with _transient("read a job record"):
                    try:
                        row = self._table.get_entity(name, JOB_ROW, select=["state", "accepted_at"])
                    except ResourceNotFoundError:
                        return False
                accepted = row.get("accepted_at")
                known = (JobState(row["state"]), row.metadata["etag"], accepted and str(accepted))
            stored, etag, accepted_at = known
            if not allowed(stored):
                return False
            entity = {"PartitionKey": name, "RowKey": JOB_ROW, "state": state.value, **values}
            # Once per job: a concluded state is final, so no later write finds these taken.
            rides = not stored.finished and state.finished
            if rides and settles:
                entity[SETTLED] = ",".join(claim.effect.id for claim in settles)
            trail_chunks = _chunks(trail_text, _ROW_TRAIL_CHUNKS) if rides else None
            if trail_chunks:
                entity |= {f"{ROW_TRAIL}{i}": chunk for i, chunk in enumerate(trail_chunks)}
            with _transient("update a job record"):
                try:
                    self._merge_if_unchanged(entity, etag)
                except ResourceModifiedError:
                    known = None  # another writer was first: its state decides the next try
                    continue
            self._flag(name, accepted_at, fields, state if state is not stored else None)
            if not rides:
                for claim in settles:
                    self.complete(claim)
            if trail and not trail_chunks:
                self.add_trail(name, trail)
            return True

    # Effects

    def claim(self, effect: Effect, now: float, lease_seconds: float) -> Claim | Settled | Busy:
        self.ensure_table()
        lease_until = now + lease_seconds
        entity = {
            "PartitionKey": effect.fact.job_name,
            "RowKey": effect.id,
            "kind": effect.kind.value,
            "target": effect.target,
            "event_id": effect.fact.event_id or "",
            "state": EffectState.IN_PROGRESS.value,
            "lease_until": lease_until,
            "first_claimed_at": now,
            "updated_at": now_iso(),
        }
        with _transient("claim an effect"):
            try:
                meta = self._insert(entity)
                return Claim(effect, str(meta["etag"]), lease_until, taken_over=False, since=now)
            except ResourceExistsError:
                current, settled = self._effect_and_settled(effect.fact.job_name, effect.id)
        state = EffectState(current["state"])
        if state is EffectState.IN_PROGRESS and effect.id in settled:
            # Settled by the job's conclusion (`update_job(settles=...)`): say so on its own row
            # too, before anything else writes the job row.
            done = {
                "PartitionKey": effect.fact.job_name,
                "RowKey": effect.id,
                "state": EffectState.COMPLETED.value,
                "reason": "",
                "updated_at": now_iso(),
            }
            with _transient("settle an effect"), suppress(ResourceModifiedError):
                self._merge_if_unchanged(done, current.metadata["etag"])
            return Settled(EffectState.COMPLETED, "")
        if state in (EffectState.COMPLETED, EffectState.FAILED):
            return Settled(state, current.get("reason"))
        if state is EffectState.IN_PROGRESS and float(current["lease_until"]) > now:
            return Busy(float(current["lease_until"]))
        since = float(current.get("first_claimed_at") or now)
        entity["first_claimed_at"] = since  # every attempt's window starts at the first one
        # A blocked attempt was refused, so it did nothing; an earlier one may have done it.
        taken_over = state is EffectState.IN_PROGRESS or bool(current.get("attempted"))
        blocked_since = current.get("blocked_since")
        if blocked_since:
            entity["blocked_since"] = float(blocked_since)
        if current.get("attempted"):
            entity["attempted"] = True
        with _transient("take over a lapsed claim"):
            try:
                meta = self._table.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                return Busy(lease_until)  # another worker took it over first
        return Claim(
            effect,
            str(meta["etag"]),
            lease_until,
            taken_over=taken_over,
            since=since,
            blocked_since=float(blocked_since) if blocked_since else None,
        )

    def _effect_and_settled(self, job_name: str, effect_id: str) -> tuple[Any, set[str]]:
        """The effect's row, and the effects its job's conclusion settled: one query."""
        # Spaces around the parameters: the SDK finds them by splitting the filter on spaces.
        query = "PartitionKey eq @job and ( RowKey eq @effect or RowKey eq @job_row )"
        parameters = {"job": job_name, "effect": effect_id, "job_row": JOB_ROW}
        rows = list(self._table.query_entities(query, parameters=parameters, select=_CLAIM_FIELDS))
        current = next((row for row in rows if row["RowKey"] == effect_id), None)
        if current is None:  # released in between: the next attempt claims it afresh
            raise TransientError(f"effect {effect_id} was released while being read")
        return current, _settled(next((row for row in rows if row["RowKey"] == JOB_ROW), None))

    def complete(self, claim: Claim) -> None:
        self._settle(claim, EffectState.COMPLETED, None)

    def fail(self, claim: Claim, reason: str) -> None:
        self._settle(claim, EffectState.FAILED, reason[:30_000])

    def block(self, claim: Claim, reason: str, since: float) -> None:
        entity = {
            "PartitionKey": claim.effect.fact.job_name,
            "RowKey": claim.effect.id,
            "state": EffectState.BLOCKED.value,
            "reason": reason[:30_000],
            "blocked_since": float(since),
            "lease_until": 0.0,
            "updated_at": now_iso(),
        }
        # A 412 means our lease lapsed and someone took over: the effect is theirs to settle.
        with _transient("record a blocked effect"), suppress(ResourceModifiedError):
            self._merge_if_unchanged(entity, claim.etag)

    def reopen(self, job_name: str, effect_id: str, now: float) -> bool:
        with _transient("read an effect"):
            try:
                current = self._table.get_entity(job_name, effect_id)
            except ResourceNotFoundError:
                return False
        if EffectState(current["state"]) not in (EffectState.FAILED, EffectState.BLOCKED):
            return False
        entity = {
            "PartitionKey": job_name,
            "RowKey": effect_id,
            "state": EffectState.BLOCKED.value,
            "reason": f"re-driven by an operator after: {current.get('reason') or '-'}"[:30_000],
            "blocked_since": float(now),
            "lease_until": 0.0,
            "updated_at": now_iso(),
        }
        with _transient("reopen an effect"):
            try:
                self._merge_if_unchanged(entity, current.metadata["etag"])
            except ResourceModifiedError:
                return False  # someone is at it already
        return True

    def release(self, claim: Claim) -> None:
        # A 412 or 404 means someone took over the lapsed claim: it is theirs now.
        gone = (ResourceModifiedError, ResourceNotFoundError)
        with _transient("release a claim"), suppress(*gone):
            self._table.delete_entity(
                claim.effect.fact.job_name,
                claim.effect.id,
                etag=claim.etag,
                match_condition=MatchConditions.IfNotModified,
            )

    def abandon(self, claim: Claim, hold_until: float = 0.0) -> None:
        entity = {
            "PartitionKey": claim.effect.fact.job_name,
            "RowKey": claim.effect.id,
            "lease_until": float(hold_until),
            "attempted": True,
            "updated_at": now_iso(),
        }
        # A 412 means someone took the claim over already: the row is theirs, and marked enough.
        with _transient("abandon a claim"), suppress(ResourceModifiedError, ResourceNotFoundError):
            self._merge_if_unchanged(entity, claim.etag)

    def effects(self, job_name: str) -> list[EffectRecord]:
        self.ensure_table()
        # The job's row too (it sorts before every effect): the effects its conclusion settled.
        query = "PartitionKey eq @job and RowKey lt @trail"
        parameters = {"job": job_name, "trail": TRAIL_PREFIX}
        with _transient("list effects"):
            rows = list(
                self._table.query_entities(query, parameters=parameters, select=_EFFECT_FIELDS)
            )
        job = next((row for row in rows if row["RowKey"] == JOB_ROW), None)
        settled = _settled(job)
        records = []
        for row in rows:
            if row["RowKey"] == JOB_ROW:
                continue
            state, updated_at = EffectState(row["state"]), row.get("updated_at")
            if state is EffectState.IN_PROGRESS and row["RowKey"] in settled:
                state = EffectState.COMPLETED
                updated_at = (job.get("finished_at") if job else None) or updated_at
            records.append(EffectRecord(
                job_name=job_name,
                effect_id=row["RowKey"],
                kind=row.get("kind", ""),
                target=row.get("target", ""),
                state=state,
                reason=row.get("reason") or None,
                updated_at=updated_at,
                event_id=row.get("event_id") or None,
            ))  # fmt: skip
        return records

    def jobs(
        self,
        *,
        state: JobState | None = None,
        since: str | None = None,
        limit: int = 100,
        blocked: bool = False,
        attention: bool = False,
    ) -> list[JobRecord]:
        self.ensure_table()
        names: Iterable[str] = (
            self._attention(blocked_only=not attention, since=since)
            if blocked or attention
            else self._newest(since)
        )
        found: list[JobRecord] = []
        for name in names:
            record = self.get_job(name)
            if record is None or (state is not None and record.state is not state):
                continue  # forgotten in between, or not asked for
            if blocked and not attention and not record.blocked:
                continue  # its attention row is behind: the record decides
            found.append(record)
            if len(found) >= limit and not (blocked or attention):
                break
        found.sort(key=lambda record: record.accepted_at or "", reverse=True)
        return found[:limit]

    def _newest(self, since: str | None) -> Iterator[str]:
        """Job names from the time index, newest first, accepted at or after `since`; read
        page by page as the caller goes on."""
        query, parameters = "PartitionKey eq @p", {"p": INDEX_PARTITION}
        if since is not None:
            query += " and RowKey lt @bound"
            parameters["bound"] = f"{_inverted(since) + 1:013d}"
        with _transient("read the job index"):
            rows = self._table.query_entities(
                query, parameters=parameters, select=["job"], results_per_page=100
            )
            for row in rows:
                yield str(row["job"])

    def _attention(self, *, blocked_only: bool, since: str | None) -> list[str]:
        # (The SDK substitutes parameters word by word: no parenthesis may touch one.)
        query = "PartitionKey eq @p and blocked gt @empty"
        if not blocked_only:
            query = (
                "PartitionKey eq @p and ( blocked gt @empty or failed gt @empty"
                " or rejected eq true )"
            )
        parameters: dict[str, Any] = {"p": ATTENTION_PARTITION, "empty": ""}
        if since is not None:
            query += " and accepted_at ge @since"  # ISO 8601 in UTC sorts as text
            parameters["since"] = since
        with _transient("read the attention index"):
            rows = self._table.query_entities(query, parameters=parameters, select=["RowKey"])
            return [str(row["RowKey"]) for row in rows]

    def blocked_reasons(self, limit: int) -> list[str]:
        self.ensure_table()
        with _transient("read the attention index"):
            rows = self._table.query_entities(
                "PartitionKey eq @p and blocked gt @empty",
                parameters={"p": ATTENTION_PARTITION, "empty": ""},
                select=["blocked"],
                results_per_page=min(limit, 1000),
            )
            reasons: list[str] = []
            for row in rows:
                reasons.append(str(row["blocked"]))
                if len(reasons) >= limit:
                    break
        return reasons

    # Retention (`bridge.retention`)

    def accepted_before(self, cutoff: str) -> Iterator[str]:
        self.ensure_table()
        with _transient("read the job index"):
            rows = self._table.query_entities(
                "PartitionKey eq @p and RowKey ge @bound",
                parameters={"p": INDEX_PARTITION, "bound": f"{_inverted(cutoff) + 1:013d}"},
                select=["job"],
            )
            for row in rows:
                yield str(row["job"])

    def forget(self, name: str) -> None:
        with _transient("read a job's rows"):
            rows = list(
                self._table.query_entities(
                    "PartitionKey eq @job",
                    parameters={"job": name},
                    select=["RowKey", "accepted_at"],
                )
            )
        accepted_at = next(
            (str(row["accepted_at"]) for row in rows if row["RowKey"] == JOB_ROW), None
        )
        keys = sorted(str(row["RowKey"]) for row in rows)
        for start in range(0, len(keys), 100):  # a transaction holds at most 100 operations
            operations: list[Any] = [
                ("delete", {"PartitionKey": name, "RowKey": key})
                for key in keys[start : start + 100]
            ]
            with _transient("forget a job"):
                self._table.submit_transaction(operations)
        with _transient("forget a job's index rows"):
            for partition, key in (
                (ATTENTION_PARTITION, name),
                (WATCH_PARTITION, name),
                *([(INDEX_PARTITION, _index_key(accepted_at, name))] if accepted_at else []),
            ):
                with suppress(ResourceNotFoundError):
                    self._table.delete_entity(partition, key)

    def forget_messages(self, before: str) -> int:
        self.ensure_table()
        with _transient("read old rejected messages"):
            rows = list(
                self._table.query_entities(
                    "PartitionKey eq @p and received_at lt @before",
                    parameters={"p": REJECTED_PARTITION, "before": before},
                    select=["RowKey"],
                )
            )
        with _transient("forget rejected messages"):
            for row in rows:
                with suppress(ResourceNotFoundError):
                    self._table.delete_entity(REJECTED_PARTITION, row["RowKey"])
        return len(rows)

    def reindex(self) -> int:
        """Index the jobs recorded before the indexes existed: one scan, once, after upgrading
        (`bridge reindex`). Returns how many jobs it read."""
        self.ensure_table()
        count = 0
        with _transient("scan the job records"):
            rows = self._table.query_entities(
                "RowKey eq @job_row",
                parameters={"job_row": JOB_ROW},
                select=["PartitionKey", "accepted_at", "state", "blocked", "failed"],
            )
            for row in rows:
                name = str(row["PartitionKey"])
                accepted_at = str(row.get("accepted_at") or now_iso())
                self._index(name, accepted_at)
                fields = {key: row.get(key) or None for key in ("blocked", "failed")}
                flagged = {key: value for key, value in fields.items() if value}
                state = JobState(row["state"])
                if flagged or state is JobState.REJECTED:
                    self._flag(name, accepted_at, flagged, state)
                count += 1
        return count

    def reject_message(self, message_id: str, reason: str, body: bytes) -> None:
        self.ensure_table()
        # Message ids are the sender's to choose; a digest is always a valid row key.
        row = hashlib.sha256(message_id.encode()).hexdigest()
        entity = {
            "PartitionKey": REJECTED_PARTITION,
            "RowKey": row,
            "message_id": message_id[:1000],
            "reason": reason[:30_000],
            "body": body[:32_000],
            "received_at": now_iso(),
        }
        with _transient("record a rejected message"):
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def rejected_messages(self) -> list[dict[str, Any]]:
        self.ensure_table()
        with _transient("list rejected messages"):
            rows = self._table.query_entities(
                "PartitionKey eq @p", parameters={"p": REJECTED_PARTITION}
            )
            return [dict(row) for row in rows]

    # The audit trail

    def add_trail(self, job_name: str, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        self.ensure_table()  # a key rotation's trail may be the first write of a new ledger
        first = entries[0]
        chunks = _chunks(json.dumps(entries, default=str), _MAX_CHUNKS, cut=True)
        entity: dict[str, Any] = {
            "PartitionKey": job_name,
            "RowKey": f"{TRAIL_PREFIX}{first.get('time', now_iso())}-{first.get('span_id', '')}",
            **{f"entries_{i}": chunk for i, chunk in enumerate(chunks)},
        }
        with _transient("keep audit records"):
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def trail(self, job_name: str) -> list[dict[str, Any]]:
        self.ensure_table()
        # The trail's rows, and the job's row for the records its conclusion kept.
        query = (
            "PartitionKey eq @job and "
            "( RowKey eq @job_row or ( RowKey ge @trail and RowKey lt @after ) )"
        )
        parameters = {"job": job_name, "job_row": JOB_ROW, "trail": TRAIL_PREFIX,
                      "after": TRAIL_PREFIX[:-1] + "."}  # fmt: skip
        with _transient("read audit records"):
            rows = list(
                self._table.query_entities(query, parameters=parameters, select=_TRAIL_FIELDS)
            )
        entries: list[dict[str, Any]] = []
        for row in sorted(rows, key=lambda row: str(row["RowKey"])):
            prefix = ROW_TRAIL if row["RowKey"] == JOB_ROW else "entries_"
            text = "".join(
                row[f"{prefix}{i}"] for i in range(_MAX_CHUNKS) if row.get(f"{prefix}{i}")
            )
            if not text:
                continue
            try:
                entries += json.loads(text)
            except ValueError:  # cut at _MAX_CHUNKS: say so rather than hide the span
                entries.append({"record": "unreadable", "row": row["RowKey"]})
        return sorted(entries, key=lambda entry: str(entry.get("time", "")))

    # The watch list

    def watch(self, name: str, due_at: float) -> None:
        self.ensure_table()
        entity = {
            "PartitionKey": WATCH_PARTITION,
            "RowKey": name,
            "due_at": float(due_at),
            "checks": 0,
            "watched_at": now_iso(),
        }
        with _transient("watch a job"), suppress(ResourceExistsError):
            self._insert(entity)

    def due(self, now: float, limit: int) -> list[Watch]:
        self.ensure_table()
        query = "PartitionKey eq @p and due_at le @now"
        with _transient("read the watch list"):
            rows = self._table.query_entities(
                query,
                parameters={"p": WATCH_PARTITION, "now": float(now)},
                select=["RowKey", "due_at", "checks"],
                results_per_page=min(limit, 1000),
            )
            found: list[Watch] = []
            for row in rows:  # pages are read lazily: stop once enough are found
                found.append(Watch(row["RowKey"], float(row["due_at"]), int(row["checks"] or 0)))
                if len(found) >= limit:
                    break
        return sorted(found, key=lambda watch: watch.due_at)

    def postpone(self, name: str, due_at: float, checks: int) -> None:
        entity = {
            "PartitionKey": WATCH_PARTITION,
            "RowKey": name,
            "due_at": float(due_at),
            "checks": checks,
        }
        with _transient("postpone a watched job"), suppress(ResourceNotFoundError):
            self._table.update_entity(entity, mode=UpdateMode.MERGE)

    def watching(self, name: str) -> Watch | None:
        self.ensure_table()
        with _transient("read the watch list"):
            try:
                row = self._table.get_entity(WATCH_PARTITION, name)
            except ResourceNotFoundError:
                return None
        return Watch(name, float(row["due_at"]), int(row.get("checks") or 0))

    def unwatch(self, name: str) -> None:
        with _transient("unwatch a job"), suppress(ResourceNotFoundError):
            self._table.delete_entity(WATCH_PARTITION, name)

    def _settle(self, claim: Claim, state: EffectState, reason: str | None) -> None:
        entity = {
            "PartitionKey": claim.effect.fact.job_name,
            "RowKey": claim.effect.id,
            "state": state.value,
            "reason": reason or "",
            "updated_at": now_iso(),
        }
        with _transient("settle an effect"):
            try:
                self._merge_if_unchanged(entity, claim.etag)
            except ResourceModifiedError as exc:
                # Our lease lapsed and another worker took over: it will settle the effect.
                raise TransientError(f"claim on {claim.effect.id} was taken over") from exc

    def _insert(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        """Insert if absent (409: `ResourceExistsError`); the answer carries the ETag and not the
        entity back (`Prefer: return-no-content`), which nobody reads."""
        return self._table.create_entity(dict(entity), response_preference="return-no-content")

    def _merge_if_unchanged(self, entity: Mapping[str, Any], etag: str | None) -> None:
        """Merge these fields only if the row is as it was read (If-Match); a 412 leaves as
        `ResourceModifiedError` for the caller to judge."""
        self._table.update_entity(
            dict(entity),
            mode=UpdateMode.MERGE,
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )

    def close(self) -> None:
        self._table.close()


def _transport() -> dict[str, Any]:
    """Where no proxy is configured, the standard library's HTTP client under azure-core's
    pipeline (`bridge.ledger.transport`: 40 % of a ledger call's CPU saved). With a proxy set,
    the SDK's default transport is kept and honours it as always."""
    if urllib.request.getproxies():
        return {}
    return {"transport": KeptAliveTransport(POOL_CONNECTIONS)}


@contextmanager
def _transient(doing: str) -> Iterator[None]:
    """Storage failures are the bridge's own infrastructure failing: retry, never reject."""
    try:
        yield
    except (ResourceExistsError, ResourceNotFoundError, ResourceModifiedError):
        raise
    except AzureError as exc:
        raise TransientError(f"ledger: could not {doing}: {type(exc).__name__}") from exc


def _job_fields(record: JobRecord) -> dict[str, Any]:
    text = record.submission.to_json()
    chunks = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)]
    if len(chunks) > _MAX_CHUNKS:
        raise ValueError("submission too large for one ledger record")  # bounded by the contract
    fields: dict[str, Any] = {f"submission_{i}": chunk for i, chunk in enumerate(chunks)}
    fields.update(
        state=record.state.value,
        studio_url=record.studio_url or "",
        reason=record.reason or "",
        accepted_at=record.accepted_at or now_iso(),
        created_at=record.created_at or "",
        finished_at=record.finished_at or "",
        via=record.via or "",
        traceparent=record.traceparent or "",
        dag_id=record.submission.origin.dag_id,
        blocked=record.blocked or "",
        blocked_since=record.blocked_since or "",
        outcome=record.outcome or "",
        status=record.status or "",
        failed=record.failed or "",
        step=record.step or "",
        result=record.result or "",
    )
    return fields


def _chunks(text: str, most: int, *, cut: bool = False) -> list[str]:
    """`text` in property-sized chunks; [] when it needs more than `most` (unless `cut`: then
    the first `most`)."""
    chunks = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)]
    if len(chunks) > most:
        return chunks[:most] if cut else []
    return chunks


def _settled(job_row: Mapping[str, Any] | None) -> set[str]:
    """The effects a job's conclusion settled, from its row (`update_job(settles=...)`)."""
    text = str(job_row.get(SETTLED) or "") if job_row is not None else ""
    return set(text.split(",")) if text else set()


def _etag_of(entity: Any) -> str | None:
    """The version of a row read from the table (a `TableEntity`); None for a plain dict."""
    metadata = getattr(entity, "metadata", None)
    return str(metadata["etag"]) if metadata and metadata.get("etag") else None


def _job_record(entity: dict[str, Any]) -> JobRecord:
    text = "".join(
        entity[f"submission_{i}"] for i in range(_MAX_CHUNKS) if f"submission_{i}" in entity
    )

    def opt(key: str) -> str | None:
        value = entity.get(key)
        return str(value) if value else None

    return JobRecord(
        submission=Submission.parse(text),
        state=JobState(entity["state"]),
        studio_url=opt("studio_url"),
        reason=opt("reason"),
        accepted_at=opt("accepted_at"),
        created_at=opt("created_at"),
        finished_at=opt("finished_at"),
        via=opt("via"),
        traceparent=opt("traceparent"),
        blocked=opt("blocked"),
        blocked_since=float(entity["blocked_since"]) if entity.get("blocked_since") else None,
        outcome=opt("outcome"),
        status=opt("status"),
        failed=opt("failed"),
        step=opt("step"),
        result=opt("result"),
        etag=_etag_of(entity),
    )


def _inverted(iso: str) -> int:
    """Epoch milliseconds of an ISO 8601 time, counted down, so that newer sorts first."""
    when = datetime.fromisoformat(iso)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _INVERT_MS - int(when.timestamp() * 1000)


def _index_key(accepted_at: str, name: str) -> str:
    return f"{_inverted(accepted_at):013d}-{name}"
