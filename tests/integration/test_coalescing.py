"""Airflow's side of exactly-once, measured with the real Airflow 3.3.2: 20 asset events landing
on one asset at once.

Seen here (docs/reliability.md has the figures): the first consumer run consumes only the first
event; the other 19 start no run of their own and wait, unconsumed, until the next event on that
asset arrives, whose run then sees all of them in `triggering_asset_events`. Nothing is lost and
nothing doubled, but an event can wait for the next one. The test pins exactly that, so an Airflow
upgrade that changes it shows up here.
"""

from __future__ import annotations

import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bridge.adapters.airflow import AirflowRest
from bridge.local.airflow import LocalAirflow
from bridge.local.stack import Stack

pytestmark = pytest.mark.integration

COALESCED = "azureml://bridge-tests/loop/coalesced"
CONSUMER = "loop_coalescing_consumer"
BURST = 20


def consumed(airflow: LocalAirflow, before: set[str], prefix: str) -> dict[str, list[str]]:
    """What each new, finished consumer run saw of the events whose effect ids start so."""
    runs = [r for r in airflow.runs(CONSUMER) if r.dag_run_id not in before]
    if any(r.state not in ("success", "failed") for r in runs):
        return {}
    return {r.dag_run_id: [e for e in airflow.xcom(CONSUMER, r.dag_run_id, "seen") or []
                           if e.startswith(prefix)] for r in runs}  # fmt: skip


def settle(airflow: LocalAirflow, before: set[str], prefix: str) -> dict[str, list[str]]:
    """Consumer runs once no new one has appeared for 8 s and all have finished."""
    last, stable_since = None, time.monotonic()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = consumed(airflow, before, prefix)
        if now != last:
            last, stable_since = now, time.monotonic()
        elif now and time.monotonic() - stable_since > 8:
            return now
        time.sleep(1)
    raise AssertionError(f"consumer runs did not settle: {last}")


def test_a_burst_on_one_asset_is_consumed_whole_by_the_next_run(loop_stack: Stack) -> None:
    airflow = loop_stack.airflow
    assert airflow is not None
    airflow.wait_for_dags([CONSUMER], timeout=90)
    before = {run.dag_run_id for run in airflow.runs(CONSUMER)}
    rest = AirflowRest(airflow.base_url, airflow.username, airflow.password)
    prefix = secrets.token_hex(4)
    effects = [f"{prefix}-{index}" for index in range(BURST)]
    rest.asset_id(COALESCED)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda eid: rest.post_asset_event(COALESCED, {"effect_id": eid}), effects))
    first = settle(airflow, before, prefix)
    rest.post_asset_event(COALESCED, {"effect_id": f"{prefix}-next"})
    second = settle(airflow, before | set(first), prefix)

    sizes = [len(seen) for seen in first.values()]
    sys.stderr.write(
        f"\n{BURST} events at once: {len(first)} run(s) consumed {sizes}; the next event's run "
        f"consumed {[len(seen) for seen in second.values()]}\n"
    )
    everything = [e for seen in (*first.values(), *second.values()) for e in seen]
    assert sorted(everything) == sorted([*effects, f"{prefix}-next"])  # each once, none lost
    assert len(first) < BURST  # Airflow coalesces: fewer runs than events
