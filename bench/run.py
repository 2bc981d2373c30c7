"""Runs the benchmarks on one local stack and prints every table.

    .venv/bin/python -m bench.run [--quick] [--only push,overhead,...] [--out DIR]

`make bench` runs it all (about 18 minutes on 2 cores) and redraws the plots in docs/images;
`make bench QUICK=1` runs every benchmark scaled down (about 4 minutes) and writes
`<name>.quick.json` beside the full results, leaving the plots alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import (
    calls,
    ceiling,
    cold_start,
    deployments,
    memory,
    overhead,
    plots,
    push_vs_poll,
    throughput,
)
from bench.report import RESULTS, write
from bench.stack import REPO, Plan, bench_stack
from bridge.local.stack import Stack


@dataclass(frozen=True)
class Sizes:
    push: push_vs_poll.Options
    overhead_events: int
    load_assets: int
    throughput_effects: int
    memory_checkpoints: tuple[int, int]
    cold_rounds: int
    ceiling_effects: int
    levels: tuple[int, ...] = (1, 4, 16)
    deploy: deployments.Options = deployments.FULL


FULL = Sizes(push_vs_poll.FULL, 1000, 1000, 400, (1000, 10_000), 5, 900)
QUICK = Sizes(push_vs_poll.QUICK, 150, 150, 48, (300, 1200), 2, 60, deploy=deployments.QUICK)
REMOTE_AIRFLOW_SECONDS = 0.05  # a managed Airflow's API, seen from a Function in another network
BENCHMARKS = (
    "push", "overhead", "throughput", "ceiling", "calls", "cold", "memory", "deployments",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every benchmark, scaled down")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated names")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}: one of {', '.join(BENCHMARKS)}")
    sizes = QUICK if args.quick else FULL
    logging.basicConfig(level=logging.ERROR)  # the bridge logs each event: not what is timed
    began = time.monotonic()
    jobs = sizes.push.jobs if "push" in chosen else 0
    plan = Plan(
        load_assets=sizes.load_assets,
        consumers={peer: jobs for peer in push_vs_poll.PEERS} if jobs else {},
        watch_poll_seconds=60.0 * sizes.push.scale,
    )
    results: dict[str, dict[str, Any]] = {}

    def record(name: str, result: dict[str, Any]) -> None:
        results[name] = result
        write(name, result, args.out, quick=args.quick)

    # Kept after the run (.stack/ is the local stack's, and `make clean` empties it): every
    # process's log is there to read when a number looks wrong.
    work = REPO / ".stack" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    with bench_stack(work, plan) as stack:
        print(f"stack up in {time.monotonic() - began:.0f}s", flush=True)
        if "push" in chosen:
            record("push_vs_poll", push_vs_poll.run(stack, sizes.push))
            push_vs_poll.print_table(results["push_vs_poll"])
        if "overhead" in chosen:
            record("overhead", overhead.run(stack, sizes.overhead_events, plan.load_uris()))
            overhead.print_table(results["overhead"])
        if "throughput" in chosen:
            uris = plan.load_uris()
            _throughputs(stack, sizes, uris, record)
        if "ceiling" in chosen:
            record("ceiling", ceiling.run(stack, sizes.ceiling_effects, plan.load_uris()))
            ceiling.print_table(results["ceiling"])
        if "calls" in chosen:
            record("calls", calls.run(stack, results.get("push_vs_poll", {}), rounds=20))
            calls.print_tables(results["calls"])
        if "cold" in chosen:
            record("cold_start", cold_start.run(stack, sizes.cold_rounds, plan.load_uris()[0]))
            cold_start.print_table(results["cold_start"])
        if "memory" in chosen:
            record("memory", memory.run(stack, sizes.memory_checkpoints, plan.load_uris()))
            memory.print_table(results["memory"])
        if "deployments" in chosen:
            record("deployments", deployments.run(stack, sizes.deploy, plan.load_uris()))
            deployments.print_tables(results["deployments"])
    if not args.quick:
        for path in plots.draw(results):
            print(f"plot: {path}")
    print(f"\nall benchmarks done in {time.monotonic() - began:.0f}s")
    return 0


def _throughputs(
    stack: Stack, sizes: Sizes, uris: list[str], record: Callable[[str, dict[str, Any]], None]
) -> None:
    """Shared cores, and Airflow 50 ms away; each without and with Azure Table's latency model
    (bench/storage_model.py): Azurite alone serves one request at a time, Azure many. Remote:
    half as many effects (at 50 ms a call, one at a time takes long, and says the same)."""
    for name, effects, delay in (
        ("throughput", sizes.throughput_effects, 0.0),
        ("throughput_remote", sizes.throughput_effects // 2, REMOTE_AIRFLOW_SECONDS),
    ):
        for model in (False, True):
            found = throughput.run(stack, effects, uris, sizes.levels, airflow_delay=delay,
                                   storage_model=model)  # fmt: skip
            record(f"{name}_modelled" if model else name, found)
            throughput.print_table(found)


if __name__ == "__main__":
    sys.exit(main())
