"""`bridge`: the command line of the bridge and its local stack."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.contracts import Submission, json_schema
from bridge.errors import BridgeError

if TYPE_CHECKING:
    from bridge.local.stack import StackOptions

SCHEMA_FILE = Path(__file__).parent / "schemas" / "submission.v1.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bridge", description="Event-driven bridge between Apache Airflow 3 and Azure ML."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the whole loop offline and print a timeline")
    _stack_arguments(demo)
    demo.add_argument("--keep", action="store_true", help="leave the stack up afterwards")
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

    schema = commands.add_parser("schema", help="print the submission v1 JSON Schema")
    schema.add_argument("--write", action="store_true", help=f"write it to {SCHEMA_FILE.name}")
    schema.set_defaults(run=_schema)

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
    parser.add_argument("--verbose", "-v", action="store_true", help="log the bridge's work")


def _options(args: argparse.Namespace) -> StackOptions:
    from bridge.local.stack import StackOptions

    options = StackOptions(
        database_url=args.database_url,
        event_schema="cloudevents" if args.cloudevents else "eventgrid",
        azure_profile=args.azure,
    )
    if getattr(args, "dags", None):
        options.dags_folder = args.dags.resolve()
    return options


def _demo(args: argparse.Namespace) -> int:
    from bridge.local import demo

    return demo.run(_options(args), keep=args.keep)


def _dev(args: argparse.Namespace) -> int:
    from bridge.local.stack import running_stack

    try:
        with running_stack(_options(args)) as stack:
            assert stack.airflow is not None
            print(f"Airflow UI      {stack.airflow.base_url}  (admin / admin)")
            print(f"Event webhook   {stack.devhost.webhook_url}")
            print(f"Azure ML (emu)  {stack.emulator.endpoint}")
            print("Airflow side environment (already set for the local Airflow):")
            for key, value in stack.queue_env.items():
                print(f"  {key}={value}")
            print("Ctrl-C stops everything.")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("\nStopped.")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    import os

    from bridge.composition import build
    from bridge.reconcile import Reconciler
    from bridge.settings import Settings

    try:
        report = Reconciler(build(Settings.from_env(os.environ))).sweep()
    except BridgeError as exc:
        print(f"reconcile failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"due": report.due, "actions": dict(report.actions), "jobs": report.jobs},
                     indent=2, sort_keys=True))  # fmt: skip
    return 0


def _schema(args: argparse.Namespace) -> int:
    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if args.write:
        SCHEMA_FILE.parent.mkdir(parents=True, exist_ok=True)
        SCHEMA_FILE.write_text(text)
        print(f"wrote {SCHEMA_FILE}")
    else:
        sys.stdout.write(text)
    return 0


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
