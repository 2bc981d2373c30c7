"""The ledger at scale: `bridge jobs` over 100,000 rows, and one reconcile sweep over 10,000 open
jobs, each as a ratio to a baseline measured in the same run.

    .venv/bin/python -m bench.ledger [--quick] [--out DIR]

Both run against real local servers this module starts and stops itself: Azurite (the ledger's
Table storage) and the Azure ML emulator (HTTPS, read through azure-ai-ml). No Airflow: nothing
measured here posts to it.

1. `bridge jobs`. A fresh table of 10,000 jobs of 10 rows each: the job record (`add_job`, which
   writes its time-index row too), 2 effect rows as `claim` writes them and 7 audit-trail rows of
   about 2 KB as `add_trail` writes them, the 9 in one transaction per job; 1 % of the jobs
   blocked (`update_job(..., blocked=...)`, which writes its attention row). Timed, median of 5
   after one warm-up round: the baseline, what `jobs()` did before the indexes (a full-table query
   `RowKey eq 'job'`, every job record parsed, the newest 50 kept); `jobs(limit=50)`;
   `jobs(blocked=True)` (its own before: the same scan filtered on `blocked`); and
   `bridge.inspection.job_lines(limit=50)`, what `bridge jobs` prints.
2. The reconcile sweep. 10,000 job records in state CREATED, each on the watch list, 1,000 due now
   and 9,000 due in an hour; the emulator holds the due ones (`AzureMLEmulator.seed`), half
   Running and half Completed. Their submissions route nothing, so a Completed job concludes with
   no Airflow call (Airflow's URL is a loopback port nobody listens on: a call would show up as a
   `retry`). `Reconciler(bridge).sweep()` at concurrency 1 (the baseline) and at the default (8),
   each on a freshly seeded table, on a Bridge from `bridge.composition.build`.

`--quick`: a tenth of each (1,000 jobs; 1,000 open jobs, 100 due), for the smoke test.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from azure.data.tables import TableClient

import bridge.local  # noqa: F401 - registers the emulator's credential with bridge.composition
from bench.processes import group_cpu_seconds, own_cpu_seconds
from bench.report import RESULTS, table, write
from bridge.composition import build
from bridge.contracts import Submission
from bridge.effects import EffectKind, effect_id
from bridge.inspection import job_lines
from bridge.ledger import EffectState, JobRecord, JobState
from bridge.ledger.table import JOB_ROW, TRAIL_PREFIX, TableLedger, _job_record
from bridge.local.azureml import AzureMLEmulator
from bridge.local.azurite import Azurite
from bridge.local.process import free_port
from bridge.reconcile import SWEEP_CONCURRENCY, Reconciler
from bridge.settings import Settings

REPO = Path(__file__).resolve().parents[1]
LIMIT = 50  # what `bridge jobs` lists by default
BLOCKED_EVERY = 100  # 1 % of the jobs
TRAIL_ROWS = 7
TRAIL_BYTES = 2000
FILL_THREADS = 4  # the client's CPU per request overlaps Azurite's; Azurite serves one at a time
DAG_ID = "bench_ledger"
CONSUMER = "bench_consumer"
BLOCKED_REASON = "[credentials] Airflow refused the bridge's token (401): check its role"


@dataclass(frozen=True)
class Sizes:
    jobs: int  # part 1: jobs of 10 rows each
    open_jobs: int  # part 2: job records on the watch list
    due: int  # part 2: of which due now
    rounds: int = 5


FULL = Sizes(jobs=10_000, open_jobs=10_000, due=1_000)
QUICK = Sizes(jobs=1_000, open_jobs=1_000, due=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.ledger", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of each, for a smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    logging.basicConfig(level=logging.ERROR)  # the bridge logs each check: not what is timed
    began = time.monotonic()
    work = REPO / ".stack" / f"bench-ledger-{time.strftime('%Y%m%d-%H%M%S')}"
    with Azurite(work) as azurite, AzureMLEmulator(work / "azureml") as emulator:
        listing = run_listing(azurite, sizes)
        write("ledger_listing", listing, args.out, quick=args.quick)
        print_listing(listing)
        sweep = run_sweep(azurite, emulator, sizes)
        write("ledger_sweep", sweep, args.out, quick=args.quick)
        print_sweep(sweep)
    print(f"\nledger benchmarks done in {time.monotonic() - began:.0f}s")
    return 0


# -- counting the ledger's requests ------------------------------------------------------------


class Counted:
    """A `TableClient` that counts the requests made through it: one per call, one per page of a
    query (pages are read lazily, as the ledger reads them)."""

    READS = frozenset({"get_entity", "query page"})

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()

    def _count(self, what: str) -> None:
        with self._lock:
            self.requests[what] += 1

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def reads(self) -> int:
        return sum(n for what, n in self.requests.items() if what in self.READS)

    def writes(self) -> int:
        return sum(n for what, n in self.requests.items() if what not in self.READS)

    def query_entities(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for page in self._inner.query_entities(*args, **kwargs).by_page():
            self._count("query page")
            yield from page

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if name.startswith("_") or not callable(found) or name == "close":
            return found

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._count(name)
            return found(*args, **kwargs)

        return counted


def counted(ledger: TableLedger) -> Counted:
    """Count what this ledger sends from now on. (Its client is the one private attribute the
    benchmark touches: the ledger is built as the bridge builds it, and only then wrapped.)"""
    client = Counted(ledger._table)
    ledger._table = cast(Any, client)
    return client


# -- 1. `bridge jobs` at 100,000 rows ---------------------------------------------------------


def run_listing(azurite: Azurite, sizes: Sizes) -> dict[str, Any]:
    name = f"jobs{secrets.token_hex(3)}"
    ledger = TableLedger.from_connection_string(azurite.connection_string, name)
    rows = TableClient.from_connection_string(azurite.connection_string, table_name=name)
    started = time.monotonic()
    blocked = _fill(ledger, rows, sizes.jobs)
    fill_seconds = time.monotonic() - started
    print(
        f"filled {sizes.jobs:,} jobs ({sizes.jobs * 10:,} rows) in {fill_seconds:.0f}s", flush=True
    )
    client = counted(ledger)

    def before() -> list[JobRecord]:  # jobs() before the indexes: a scan of every job record
        return _scan(client, "RowKey eq @job_row", {"job_row": JOB_ROW})

    def before_blocked() -> list[JobRecord]:
        query, parameters = "RowKey eq @job_row and blocked gt @empty", {"job_row": JOB_ROW}
        return _scan(client, query, {**parameters, "empty": ""}, limit=100)

    cases: dict[str, Callable[[], list[Any]]] = {
        "before: scan RowKey eq 'job', newest 50": before,
        "jobs(limit=50)": lambda: ledger.jobs(limit=LIMIT),
        "before: scan, blocked only": before_blocked,
        "jobs(blocked=True)": lambda: ledger.jobs(blocked=True),
        "job_lines(limit=50): bridge jobs": lambda: job_lines(ledger, limit=LIMIT),
    }
    newest = [record.name for record in before()]
    assert [record.name for record in ledger.jobs(limit=LIMIT)] == newest, "not the same 50"
    assert len(ledger.jobs(blocked=True)) == blocked, "not every blocked job listed"
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    requests: dict[str, int] = {}
    found: dict[str, int] = {}
    for round_ in range(sizes.rounds + 1):  # round 0 warms every path up, and is dropped
        for name, case in cases.items():
            client.reset()
            began = time.perf_counter()
            result = case()
            elapsed = time.perf_counter() - began
            requests[name], found[name] = sum(client.requests.values()), len(result)
            if round_:
                seconds[name].append(elapsed)
    ledger.close()
    base = statistics.median(seconds["before: scan RowKey eq 'job', newest 50"])
    summary = {
        name: {
            "median_s": round(statistics.median(values), 4),
            "ratio": round(statistics.median(values) / base, 4),
            "table_requests": requests[name],
            "jobs_returned": found[name],
            "rounds": len(values),
        }
        for name, values in seconds.items()
    }
    return {
        "jobs": sizes.jobs,
        "rows": sizes.jobs * 10,
        "index_rows": sizes.jobs + blocked,
        "blocked": blocked,
        "fill_s": round(fill_seconds, 1),
        "cases": summary,
    }


def _scan(
    client: Counted, query: str, parameters: dict[str, Any], limit: int = LIMIT
) -> list[JobRecord]:
    """What `TableLedger.jobs` did before this version: read every matching job row, parse each,
    keep the newest."""
    rows = list(client.query_entities(query, parameters=parameters))
    records = sorted((_job_record(row) for row in rows),
                     key=lambda record: record.accepted_at or "", reverse=True)  # fmt: skip
    return records[:limit]


def _fill(ledger: TableLedger, rows: TableClient, jobs: int) -> int:
    """`jobs` jobs of 10 rows each, one accepted every 30 s up to now; returns how many are
    blocked. The job record through the ledger, the effect and trail rows through `rows`."""
    ledger.ensure_table()
    start = datetime.now(UTC) - timedelta(seconds=30 * jobs)
    run = secrets.token_hex(3)

    def one(index: int) -> bool:
        accepted = start + timedelta(seconds=30 * index)
        job = _listed_submission(run, index)
        blocked = index % BLOCKED_EVERY == BLOCKED_EVERY // 2
        record = JobRecord(
            job,
            JobState.CREATED if blocked else JobState.COMPLETED,
            accepted_at=_iso(accepted),
            created_at=_iso(accepted + timedelta(seconds=1)),
            finished_at=None if blocked else _iso(accepted + timedelta(minutes=20)),
            via="event",
            outcome="completed",
            status="Completed",
        )
        ledger.add_job(record)
        operations: list[Any] = [
            ("create", _effect_row(job, EffectKind.ASSET_EVENT, job.on.completed[0], accepted)),
            ("create", _effect_row(job, EffectKind.DAG_RUN, CONSUMER, accepted, blocked=blocked)),
            *(("upsert", _trail_row(job, accepted, span)) for span in range(TRAIL_ROWS)),
        ]
        rows.submit_transaction(operations)
        if blocked:
            since = (accepted + timedelta(minutes=20)).timestamp()
            ledger.update_job(job.id, JobState.CREATED, blocked=BLOCKED_REASON, blocked_since=since)
        return blocked

    with ThreadPoolExecutor(FILL_THREADS) as pool, rows:
        return sum(pool.map(one, range(jobs)))


def _listed_submission(run: str, index: int) -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": DAG_ID, "run_id": f"{run}-{index}", "task_id": "submit"},
            "job": {"command": "python train.py", "environment": "azureml:e:1", "compute": "c"},
            "on": {"completed": [f"bench://ledger/{index % 50}"]},
            "trigger": {"completed": [{"dag_id": CONSUMER}]},
        }
    )


def _effect_row(
    job: Submission, kind: EffectKind, target: str, accepted: datetime, *, blocked: bool = False
) -> dict[str, Any]:
    """An effect row as `TableLedger.claim` writes it, then settled (or blocked)."""
    claimed = (accepted + timedelta(minutes=20)).timestamp()
    row: dict[str, Any] = {
        "PartitionKey": job.id,
        "RowKey": effect_id("completed", kind, target),
        "kind": kind.value,
        "target": target,
        "event_id": f"{secrets.token_hex(16)}",
        "state": (EffectState.BLOCKED if blocked else EffectState.COMPLETED).value,
        "lease_until": 0.0 if blocked else claimed + 120,
        "first_claimed_at": claimed,
        "updated_at": _iso(accepted + timedelta(minutes=20)),
        "reason": BLOCKED_REASON if blocked else "",
    }
    if blocked:
        row["blocked_since"] = claimed
    return row


def _trail_row(job: Submission, accepted: datetime, span: int) -> dict[str, Any]:
    """An audit-trail row as `TableLedger.add_trail` writes it: one span's records, ~2 KB."""
    when = _iso(accepted + timedelta(seconds=span))
    span_id = secrets.token_hex(8)
    entry = {
        "time": when, "record": "call", "trace_id": secrets.token_hex(16), "span_id": span_id,
        "span": "event", "job": job.id, "system": "airflow", "operation": "POST /assets/events",
        "target": job.on.completed[0], "status": 200, "latency_ms": 13.2,
        "identity": "managed identity 00000000-0000-0000-0000-000000000000",
    }  # fmt: skip
    entries, text = [entry], json.dumps([entry])
    while len(text) < TRAIL_BYTES:
        entries.append({**entry, "record": "decision", "decision": "effect_performed"})
        text = json.dumps(entries)
    return {"PartitionKey": job.id, "RowKey": f"{TRAIL_PREFIX}{when}-{span_id}", "entries_0": text}


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds")


def print_listing(result: dict[str, Any]) -> None:
    rows = [
        [name, r["median_s"], r["ratio"], r["table_requests"], r["jobs_returned"]]
        for name, r in result["cases"].items()
    ]
    title = (
        f"8. bridge jobs over {result['rows']:,} rows ({result['jobs']:,} jobs, "
        f"{result['blocked']} blocked): median seconds; ratio to the full scan"
    )
    print(table(title, ["case", "seconds", "ratio", "table requests", "jobs"], rows))


# -- 2. The reconcile sweep ---------------------------------------------------------------------


def run_sweep(azurite: Azurite, emulator: AzureMLEmulator, sizes: Sizes) -> dict[str, Any]:
    runs = [_sweep_once(azurite, emulator, sizes, level) for level in (1, SWEEP_CONCURRENCY)]
    base = runs[0]["sweep_s"]
    for run in runs:
        run["ratio"] = round(run["sweep_s"] / base, 3)
    return {"open_jobs": sizes.open_jobs, "due": sizes.due, "runs": runs}


def _sweep_once(
    azurite: Azurite, emulator: AzureMLEmulator, sizes: Sizes, concurrency: int
) -> dict[str, Any]:
    settings = Settings(
        **emulator.azureml_settings(),
        ledger_connection_string=azurite.connection_string,
        ledger_table=f"sweep{concurrency}x{secrets.token_hex(3)}",
        airflow_url=f"http://127.0.0.1:{free_port()}",  # nobody listens: nothing may be posted
        airflow_username="bench",
        airflow_password=secrets.token_urlsafe(12),
        signing_key=secrets.token_hex(32),
    )
    bridge = build(settings)
    ledger = cast(TableLedger, bridge.ledger)
    started = time.monotonic()
    due = _seed_open(ledger, emulator, sizes, f"c{concurrency}-{secrets.token_hex(2)}")
    print(f"seeded {sizes.open_jobs:,} open jobs, {len(due):,} due, in "
          f"{time.monotonic() - started:.0f}s", flush=True)  # fmt: skip
    assert bridge.jobs.find("bench-warm-up") is None  # azure-ai-ml imported, MLClient built
    client = counted(ledger)
    first_request = len(emulator.requests)
    cpu_own, cpu_azurite = own_cpu_seconds(), _azurite_cpu(azurite)
    began = time.perf_counter()
    report = Reconciler(bridge, concurrency=concurrency).sweep()
    seconds = time.perf_counter() - began
    cpu_own, cpu_azurite = own_cpu_seconds() - cpu_own, _azurite_cpu(azurite) - cpu_azurite
    ledger_requests = dict(sorted(client.requests.items()))
    reads, writes = client.reads(), client.writes()
    requests = emulator.requests[first_request:]
    gets = sum(1 for r in requests if r.method == "GET" and "/jobs/" in r.path)
    assert len(requests) == gets, f"the sweep did more than read jobs: {requests[:3]}"
    checked = len(report.jobs)
    actions = dict(sorted(report.actions.items()))
    if checked == len(due):  # every due job checked: each did what its status says
        expected = Counter("concluded" if s == "Completed" else "running" for s in due.values())
        assert actions == dict(sorted(expected.items())), f"unexpected actions {actions}"
        concluded = [name for name, status in due.items() if status == "Completed"][:5]
        assert all(_state(ledger, name) is JobState.COMPLETED for name in concluded)
    run = {
        "concurrency": concurrency,
        "sweep_s": round(seconds, 2),
        "due": report.due,
        "checked": checked,
        "left_for_next_sweep": report.due - checked,
        "actions": actions,
        "azureml_gets": gets,
        "ledger_reads": reads,
        "ledger_writes": writes,
        "ledger_requests": ledger_requests,
        "cpu_s": {
            "bench process (bridge + emulator)": round(cpu_own, 1),
            "azurite": round(cpu_azurite, 1),
        },
    }
    ledger.close()
    return run


def _seed_open(
    ledger: TableLedger, emulator: AzureMLEmulator, sizes: Sizes, run: str
) -> dict[str, str]:
    """`open_jobs` job records in state CREATED, each watched; every tenth due now, the others in
    an hour. The due ones are in the emulator, alternately Running and Completed. Returns the due
    jobs' names with their status."""
    ledger.ensure_table()
    now = time.time()
    every = sizes.open_jobs // sizes.due
    due: dict[str, str] = {}
    lock = threading.Lock()

    def one(index: int) -> None:
        job = Submission.model_validate(
            {
                "origin": {"dag_id": DAG_ID, "run_id": f"{run}-{index}", "task_id": "submit"},
                "job": {"command": "true", "environment": "azureml:e:1", "compute": "c"},
            }
        )  # no routes: a Completed job concludes without calling Airflow
        accepted = datetime.fromtimestamp(now - 3600, UTC)
        ledger.add_job(JobRecord(job, JobState.CREATED, accepted_at=_iso(accepted),
                                 created_at=_iso(accepted)))  # fmt: skip
        is_due = index % every == 0
        ledger.watch(job.id, now - 1 if is_due else now + 3600)
        if is_due:
            status = "Running" if (index // every) % 2 else "Completed"
            emulator.seed(job.id, status, DAG_ID)
            with lock:
                due[job.id] = status

    with ThreadPoolExecutor(FILL_THREADS) as pool:
        list(pool.map(one, range(sizes.open_jobs)))
    return due


def _state(ledger: TableLedger, name: str) -> JobState | None:
    record = ledger.get_job(name)
    return None if record is None else record.state


def _azurite_cpu(azurite: Azurite) -> float:
    group = azurite.process_group
    return group_cpu_seconds(group) if group is not None else 0.0


def print_sweep(result: dict[str, Any]) -> None:
    rows = [
        [
            r["concurrency"],
            r["sweep_s"],
            r["ratio"],
            f"{r['checked']}/{r['due']}",
            ", ".join(f"{n} {action}" for action, n in r["actions"].items()),
            r["azureml_gets"],
            r["ledger_reads"],
            r["ledger_writes"],
            r["cpu_s"]["bench process (bridge + emulator)"],
            r["cpu_s"]["azurite"],
        ]
        for r in result["runs"]
    ]
    title = (
        f"9. One reconcile sweep: {result['open_jobs']:,} open jobs, {result['due']:,} due "
        "(seconds; ratio to concurrency 1)"
    )
    header = ["concurrency", "seconds", "ratio", "checked", "actions", "Azure ML GETs",
              "ledger reads", "ledger writes", "CPU s bench", "CPU s Azurite"]  # fmt: skip
    print(table(title, header, rows))


if __name__ == "__main__":
    sys.exit(main())
