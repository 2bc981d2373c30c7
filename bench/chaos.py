"""`make chaos`: every fault scenario at full size against the local stack, with a report.

Two or more bridge processes (`bridge serve`), one ledger (Azurite), one Airflow on PostgreSQL.
Per scenario: effects expected, duplicated, missing and routed wrongly, the deliveries' retries,
and the time to drain. Writes bench/results/chaos.json (with `--scenario`, the rows of the other
scenarios already there are kept); exits 1 if any effect was doubled, lost or misrouted. `--quick`
runs the scaled-down sizes the test suite uses.

    .venv/bin/python bench/chaos.py [--quick] [--scenario NAME ...] [--processes N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bridge.local.chaos import QUICK, SCENARIOS, ChaosOptions, chaos_stack, run_scenario

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the test suite's scaled-down sizes")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--processes", type=int)
    args = parser.parse_args(argv)
    options = QUICK if args.quick else ChaosOptions()
    if args.processes:
        options = dataclasses.replace(options, processes=args.processes)
    scenarios = args.scenario or list(SCENARIOS)
    reports = []
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bridge-chaos-") as workdir,
        chaos_stack(Path(workdir), options.assets) as stack,
    ):
        print(f"stack up in {time.monotonic() - started:.1f}s; options {options}")
        for scenario in scenarios:
            report = run_scenario(stack, scenario, options)
            print(report.line(), flush=True)
            reports.append(report)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("chaos-quick.json" if args.quick else "chaos.json")
    rows = [dataclasses.asdict(r) for r in reports]
    if args.scenario:  # one scenario measured again: every other row stays as it was measured
        rows += [row for row in _rows(path) if row.get("scenario") not in scenarios]
        order = {name: index for index, name in enumerate(SCENARIOS)}
        rows.sort(key=lambda row: order.get(str(row.get("scenario")), len(order)))
    path.write_text(json.dumps(
        {"options": dataclasses.asdict(options), "reports": rows}, indent=2) + "\n")  # fmt: skip
    broken = [r for r in reports if r.duplicated or r.missing or r.wrong_route]
    print(f"{len(reports)} scenarios, {len(broken)} with a doubled, lost or misrouted effect")
    return 1 if broken else 0


def _rows(path: Path) -> list[dict[str, Any]]:
    try:
        reports = json.loads(path.read_text()).get("reports")
    except (OSError, ValueError, AttributeError):
        return []
    return [row for row in reports if isinstance(row, dict)] if isinstance(reports, list) else []


if __name__ == "__main__":
    sys.exit(main())
