"""`bridge`: the command line of the bridge and its local stack."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.contracts import Submission, json_schema
from bridge.errors import BridgeError
from bridge.ledger import JobState

if TYPE_CHECKING:
    from bridge.local.stack import StackOptions
    from bridge.replay import Item
    from bridge.service import Bridge
    from bridge.settings import Settings

SCHEMA_FILE = Path(__file__).parent / "schemas" / "submission.v1.json"
BLOCKED = "blocked"
ATTENTION = "attention"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bridge", description="Event-driven bridge between Apache Airflow 3 and Azure ML."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the whole loop offline and print a timeline")
    _stack_arguments(demo)
    demo.add_argument("--keep", action="store_true", help="leave the stack up afterwards")
    demo.add_argument(
        "--lifecycle",
        action="store_true",
        help="instead: a model from training to production (train, register, stage, smoke-test, "
        "promote, share, deploy in a second workspace), every step an asset event",
    )
    demo.set_defaults(run=_demo)

    dev = commands.add_parser("dev", help="run the local stack in the foreground for your DAGs")
    _stack_arguments(dev)
    dev.add_argument("--dags", type=Path, help="your DAGs folder (default: examples/dags)")
    dev.set_defaults(run=_dev)

    reconcile = commands.add_parser(
        "reconcile", help="sweep once for jobs whose outcome is overdue (settings from the env)"
    )
    reconcile.add_argument("--verbose", "-v", action="store_true", help="log each job's check")
    reconcile.set_defaults(run=_reconcile)

    serve = commands.add_parser(
        "serve", help="run one dev host (webhook, queue worker, reconcile) on the env's settings"
    )
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument(
        "--lease-seconds", type=float, help="effect claim lease (default: from the timeouts)"
    )
    serve.add_argument(
        "--ambiguity-hold",
        type=float,
        help="how long a claim stays unusable after a lost reply (default: from the timeouts)",
    )
    serve.add_argument(
        "--crash-after-effect",
        type=float,
        default=0.0,
        help="chaos runs only: the chance that this process kills itself right after Airflow "
        "acted and before the ledger settled",
    )
    serve.set_defaults(run=_serve)

    replay = commands.add_parser(
        "replay", help="feed dead-lettered events and messages through the bridge again, once"
    )
    replay.add_argument(
        "--dead-letter-url",
        default=os.environ.get("BRIDGE_DEADLETTER_URL"),
        help="Event Grid's dead-letter container URL (env BRIDGE_DEADLETTER_URL; the deployment's "
        "EVENTGRID_DEADLETTER_URL output). Locally, the stack's Azurite container is used.",
    )
    replay.add_argument(
        "--source",
        action="append",
        choices=["dead-letters", "servicebus", "rejected"],
        help="read only these sources (repeatable; default: all that are configured)",
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="say what would happen; change nothing"
    )
    replay.add_argument("--json", action="store_true", help="print JSON instead of a table")
    replay.set_defaults(run=_replay)

    _add_retry(commands)

    jobs = commands.add_parser("jobs", help="list the ledger's jobs (settings from the env)")
    jobs.add_argument(
        "--state",
        choices=[*(state.value for state in JobState), BLOCKED, ATTENTION],
        help=f"a job state, {BLOCKED} (waiting on an operator's fix) or {ATTENTION} "
        "(blocked, a failed effect, or rejected: what `bridge retry --all` re-drives)",
    )
    jobs.add_argument("--since", help="accepted at or after this ISO 8601 time (UTC)")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    jobs.set_defaults(run=_jobs)

    show = commands.add_parser("show", help="one job's whole trail (settings from the env)")
    show.add_argument("job", help="the job name (= submission id)")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.add_argument("--offline", action="store_true", help="do not ask Azure ML for its status")
    show.set_defaults(run=_show)

    schema = commands.add_parser("schema", help="print the submission v1 JSON Schema")
    schema.add_argument("--write", action="store_true", help=f"write it to {SCHEMA_FILE.name}")
    schema.set_defaults(run=_schema)

    health = commands.add_parser(
        "health",
        help="what /api/health says, from this environment's settings: each problem, and each "
        "credential's freshness (never a value); exit 1 unless healthy",
    )
    health.set_defaults(run=_health)

    validate = commands.add_parser("validate", help="check a submission JSON file")
    validate.add_argument("file", type=Path)
    validate.add_argument("--policy", help="a policy JSON to check it against as well")
    validate.set_defaults(run=_validate)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # azure-ai-ml announces its experimental classes and studio URL details at WARNING.
    logging.getLogger("azure").setLevel(logging.ERROR)
    return int(args.run(args))


def _add_retry(commands: Any) -> None:
    """The ledger's upkeep: `retry` after a fix, `retention`, `reindex`."""
    retry = commands.add_parser(
        "retry",
        help="after a fix, re-drive failed and blocked effects and submissions, once",
    )
    retry.add_argument("job", nargs="*", help="the jobs to re-drive (default: see --all/--since)")
    retry.add_argument("--all", action="store_true", help="every job with something to re-drive")
    retry.add_argument("--since", help="only jobs accepted at or after this ISO 8601 time (UTC)")
    retry.add_argument(
        "--dry-run", action="store_true", help="say what would happen; change nothing"
    )
    retry.add_argument("--json", action="store_true", help="print JSON instead of a table")
    retry.set_defaults(run=_retry)

    retention = commands.add_parser(
        "retention", help="forget finished jobs older than BRIDGE_LEDGER_RETENTION_DAYS, now"
    )
    retention.set_defaults(run=_retention)
    reindex = commands.add_parser(
        "reindex", help="index jobs recorded before this version (once, after upgrading)"
    )
    reindex.set_defaults(run=_reindex)


def _stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="Airflow metadata DB (PostgreSQL); default SQLite")
    parser.add_argument("--cloudevents", action="store_true", help="emit CloudEvents 1.0")
    parser.add_argument(
        "--azure",
        choices=["documented", "observed", "lossy"],
        default="documented",
        help="how the Azure ML emulator sends events: as documented, as public payloads show "
        "(no event for a canceled job), or losing some (default: documented)",
    )
    parser.add_argument(
        "--airflow-auth",
        choices=["password", "entra"],
        default="password",
        help="how the bridge signs in to Airflow: its own user and password, or its managed "
        "identity's Entra ID token, checked by the shipped auth manager; with entra, the signing "
        "key is a secret in a local Key Vault that rotates itself (default: password)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log the bridge's work")


def _options(args: argparse.Namespace) -> StackOptions:
    from bridge.local.stack import StackOptions

    options = StackOptions(
        database_url=args.database_url,
        event_schema="cloudevents" if args.cloudevents else "eventgrid",
        azure_profile=args.azure,
        airflow_auth=args.airflow_auth,
        # Entra mode is the no-secret mode: the signing key, too, lives in (a local) Key Vault.
        key_vault=args.airflow_auth == "entra",
    )
    if getattr(args, "dags", None):
        options.dags_folder = args.dags.resolve()
    return options


def _demo(args: argparse.Namespace) -> int:
    if args.lifecycle:
        from bridge.local import lifecycle_demo

        return lifecycle_demo.run(lifecycle_demo.options(_options(args)), keep=args.keep)
    from bridge.local import demo

    return demo.run(_options(args), keep=args.keep)


def _dev(args: argparse.Namespace) -> int:
    from bridge.local.stack import running_stack

    try:
        with running_stack(_options(args)) as stack:
            assert stack.airflow is not None
            airflow = stack.airflow
            print(f"Airflow UI      {airflow.base_url}  ({airflow.username} / {airflow.password})")
            print(f"Event webhook   {stack.devhost.webhook_url}")
            print(f"Azure ML (emu)  {stack.emulator.endpoint}")
            print(f"Service Bus     {stack.servicebus.connection_string}")
            print(f"{'':16}(BRIDGE_SERVICEBUS for bridge replay; queue {stack.queue_name})")
            print("The operator's connection (already set for the local Airflow):")
            for key, value in stack.airflow_connection.items():
                print(f"  {key}={value}")
            print("Ctrl-C stops everything.")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("\nStopped.")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from bridge.reconcile import Reconciler

    try:
        report = Reconciler(_environment_bridge()).sweep()
    except BridgeError as exc:
        print(f"reconcile failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"due": report.due, "actions": dict(report.actions), "jobs": report.jobs},
                     indent=2, sort_keys=True))  # fmt: skip
    return 0


def _serve(args: argparse.Namespace) -> int:
    from bridge.composition import json_logs
    from bridge.local.serve import serve

    json_logs(logging.getLogger())  # as the Function App logs without Application Insights

    return serve(
        args.port,
        lease_seconds=args.lease_seconds,
        ambiguity_hold=args.ambiguity_hold,
        crash_after_effect=args.crash_after_effect,
    )


def _replay(args: argparse.Namespace) -> int:
    from bridge.replay import Replayer, as_json, summary

    try:
        bridge = _environment_bridge()
        sources = _replay_sources(bridge, args)
        lines = Replayer(bridge, dry_run=args.dry_run).replay(
            item for source in sources for item in source
        )
    except BridgeError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(as_json(lines))
    else:
        _table(("SOURCE", "ITEM", "EVENT / MESSAGE", "RESULT", "DETAIL"),
               [(x.source, x.key, x.subject, x.result, x.detail) for x in lines])  # fmt: skip
        counts = ", ".join(f"{n} {result}" for result, n in sorted(summary(lines).items()))
        print(f"\n{len(lines)} replayed{' (dry run)' if args.dry_run else ''}: {counts or '-'}")
    return 1 if any(line.result == "retry" for line in lines) else 0


def _replay_sources(bridge: Bridge, args: argparse.Namespace) -> list[Iterable[Item]]:
    """The sources that are configured: Azure's by URL and identity, the local stack's by
    connection string."""
    from bridge.replay import rejected_items

    chosen = set(args.source or ["dead-letters", "servicebus", "rejected"])
    settings = bridge_settings()
    sources: list[Iterable[Item]] = []
    if "dead-letters" in chosen:
        from bridge.adapters.dead_letters import DeadLetterBlobs

        if args.dead_letter_url:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential(
                managed_identity_client_id=settings.managed_identity_client_id
            )
            sources.append(DeadLetterBlobs.from_url(args.dead_letter_url, credential).items())
        elif settings.ledger_connection_string:  # the local stack: Azurite holds both
            from bridge.local.dead_letter import CONTAINER

            blobs = DeadLetterBlobs.from_connection_string(
                settings.ledger_connection_string, CONTAINER
            )
            sources.append(blobs.items())
    if "servicebus" in chosen:
        from bridge.adapters.dead_letter_queue import ServiceBusDeadLetters

        dead = ServiceBusDeadLetters.from_environment(
            os.environ, settings.managed_identity_client_id
        )
        if dead is not None:
            sources.append(dead.items(peek=args.dry_run))
    if "rejected" in chosen:
        sources.append(rejected_items(bridge))
    return sources


def bridge_settings() -> Settings:
    from bridge.settings import Settings

    return Settings.from_env(os.environ)


def _jobs(args: argparse.Namespace) -> int:
    from bridge.inspection import job_lines

    since = _utc(args.since) if args.since else None
    state = args.state if args.state in (None, BLOCKED, ATTENTION) else JobState(args.state)
    try:
        lines = job_lines(
            _environment_bridge().ledger,
            state=state if isinstance(state, JobState) else None,
            since=since,
            limit=args.limit,
            blocked=state == BLOCKED,
            attention=state == ATTENTION,
        )
    except BridgeError as exc:
        print(f"jobs: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([dataclasses.asdict(line) for line in lines], indent=2))
        return 0
    rows = [
        (line.name, line.state, _ago(line.age_seconds), f"{line.dag_id} / {line.run_id}",
         _targets(line.done), _targets(line.pending), (line.blocked or line.failed or "")[:80])
        for line in lines
    ]  # fmt: skip
    _table(("JOB", "STATE", "AGE", "DAG / RUN", "DONE", "PENDING", "WAITING ON"), rows)
    return 0


def _retention(args: argparse.Namespace) -> int:
    from bridge.retention import Retention

    try:
        settings = bridge_settings()
        report = Retention(_environment_bridge().ledger, days=settings.ledger_retention_days).run()
    except BridgeError as exc:
        print(f"retention: {exc}", file=sys.stderr)
        return 1
    print(f"retention: {report.summary()}")
    return 0


def _reindex(args: argparse.Namespace) -> int:
    from bridge.ledger.table import TableLedger

    try:
        ledger = _environment_bridge().ledger
        assert isinstance(ledger, TableLedger)
        count = ledger.reindex()
    except BridgeError as exc:
        print(f"reindex: {exc}", file=sys.stderr)
        return 1
    print(f"reindex: {count} job(s) indexed")
    return 0


def _retry(args: argparse.Namespace) -> int:
    from bridge.retry import Retrier, as_json

    if not (args.job or args.all or args.since):
        print("retry: name the jobs, or say --all or --since", file=sys.stderr)
        return 2
    since = _utc(args.since) if args.since else None
    try:
        retrier = Retrier(_environment_bridge(), dry_run=args.dry_run)
        lines = retrier.retry(retrier.candidates(args.job, since=since))
    except BridgeError as exc:
        print(f"retry: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(as_json(lines))
    else:
        _table(("JOB", "WAS", "RESULT", "DETAIL"),
               [(x.job, x.was[:60], x.result, x.detail[:100]) for x in lines])  # fmt: skip
        print(f"\n{len(lines)} job(s){' (dry run)' if args.dry_run else ''}")
    stuck = {"retry", "blocked", "deferred", "still rejected"}
    return 1 if any(line.result in stuck for line in lines) else 0


def _show(args: argparse.Namespace) -> int:
    from bridge.inspection import TRAIL_HEADER, trail, trail_row

    try:
        bridge = _environment_bridge()
        found = trail(bridge.ledger, None if args.offline else bridge.jobs, args.job)
        # Not a job: a trail of its own (the signing key's rotations, key-rotation.<secret>).
        records = bridge.ledger.trail(args.job) if found is None else []
    except BridgeError as exc:
        print(f"show: {exc}", file=sys.stderr)
        return 1
    if found is None and records:
        return _show_trail(records, as_json=args.json)
    if found is None:
        print(f"show: the ledger has no job {args.job!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(found.to_json(), indent=2))
        return 0
    job = found.job
    facts = [
        ("job", job.name),
        ("state", job.state + (f" (found by {found.found_by})" if found.found_by else "")),
        ("origin", f"{job.dag_id} / {job.run_id} / {job.task_id} [{job.map_index}]"),
        ("experiment", f"{found.experiment} ({found.job_type})"),
        ("accepted", found.accepted_at or "-"),
        ("created", found.created_at or "-"),
        ("finished", found.finished_at or "-"),
        ("Azure ML now", found.azureml_status or found.azureml_error or "(not asked)"),
        ("studio", found.studio_url or "-"),
        ("routes", _routes(found.routes)),
    ]
    if found.step:
        facts.append(("step", found.step))
    if found.result:
        facts.append(("result", json.dumps(found.result, sort_keys=True)))
    if found.reason:
        facts.append(("reason", found.reason))
    if found.blocked:
        facts.append(("blocked", f"{found.blocked} (since {found.blocked_since})"))
    if found.failed:
        facts.append(("failed", f"{found.failed} (bridge retry {job.name})"))
    if found.watch:
        facts.append(("next check", f"{found.watch['due_at']} (checked {found.watch['checks']}x)"))
    width = max(len(name) for name, _ in facts)
    for name, value in facts:
        print(f"{name:<{width}}  {value}")
    print()
    _table(
        ("EFFECT", "TARGET", "STATE", "AT", "EVENT", "REASON"),
        [(e.kind, e.target, e.state, e.updated_at or "", e.event_id or "", e.reason or "")
         for e in found.effects],
    )  # fmt: skip
    print(f"\ntrail (trace {found.trace_id or '-'})")
    _table(TRAIL_HEADER, [trail_row(entry) for entry in found.records])
    return 0


def _show_trail(records: list[dict[str, Any]], *, as_json: bool) -> int:
    from bridge.inspection import TRAIL_HEADER, trail_row

    if as_json:
        print(json.dumps(records, indent=2))
    else:
        _table(TRAIL_HEADER, [trail_row(entry) for entry in records])
    return 0


def _routes(routes: dict[str, Any]) -> str:
    """`completed -> a://x, dag run d; failed -> ...`: what each outcome leads to."""
    parts = []
    for outcome in ("completed", "failed", "canceled"):
        targets = list(routes["on"].get(outcome) or [])
        targets += [f"dag run {t['dag_id']}" for t in routes["trigger"].get(outcome) or []]
        if targets:
            parts.append(f"{outcome} -> {', '.join(targets)}")
    return "; ".join(parts) or "(none)"


def _environment_bridge() -> Bridge:
    from bridge.composition import build

    return build(_local_aware_settings())


def _local_aware_settings() -> Settings:
    """The environment's settings; with the local stack's emulator, its credential registered."""
    from bridge.composition import emulated

    settings = bridge_settings()
    if emulated(settings):  # the local stack's emulator: its credential comes with the stack
        importlib.import_module("bridge.local")
    return settings


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    if not rows:
        print("(none)")
        return
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def _targets(targets: list[str]) -> str:
    return ", ".join(targets) or "-"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _utc(text: str) -> str:
    """An ISO 8601 time as the ledger writes it (UTC), for a text comparison."""
    from datetime import UTC, datetime

    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds")


def _schema(args: argparse.Namespace) -> int:
    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if args.write:
        SCHEMA_FILE.parent.mkdir(parents=True, exist_ok=True)
        SCHEMA_FILE.write_text(text)
        print(f"wrote {SCHEMA_FILE}")
    else:
        sys.stdout.write(text)
    return 0


def _health(args: argparse.Namespace) -> int:
    from bridge import health

    status, body = health.report(_local_aware_settings(), os.environ)
    print(json.dumps(body, indent=2))
    return 0 if status == 200 else 1


def _validate(args: argparse.Namespace) -> int:
    from bridge.policy import Policy

    try:
        submission = Submission.parse(args.file.read_bytes())
        if args.policy:
            Policy.from_json(args.policy).check(submission)
    except (OSError, BridgeError) as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    print(f"valid: job name {submission.id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
