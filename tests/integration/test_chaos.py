"""The chaos scenarios, scaled down (hundreds of deliveries): several `bridge serve` processes,
one ledger, one Airflow on PostgreSQL, faults injected. `make chaos` runs them at full size."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.local.chaos import QUICK, SCENARIOS, chaos_stack, run_scenario

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chaos_stack(tmp_path_factory.mktemp("chaos"), QUICK.assets) as running:
        yield running


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_effect_is_doubled_lost_or_misrouted(stack: Any, scenario: str) -> None:
    report = run_scenario(stack, scenario, QUICK)
    sys.stderr.write(f"\n{report.line()}\n")
    assert (report.duplicated, report.missing, report.wrong_route) == (0, 0, 0), report
    assert report.expected == QUICK.jobs and report.deliveries >= QUICK.deliveries
    if scenario == "lost-replies":
        assert report.faults.get("lose-reply", 0) + report.faults.get("gateway-error", 0) > 0
    if scenario == "crash":
        assert report.faults.get("restarts", 0) > 0, "no process died: nothing was proven"
    if scenario in ("outage", "storage-blip"):
        assert report.faults.get(scenario) == 1 and report.retries > 0
    if scenario == "misconfigured":
        assert report.faults.get(scenario) == 1
        assert report.faults.get("blocked", 0) > 0, "no effect was blocked: nothing was proven"
        assert "unconcluded" not in report.faults, "a blocked job was never concluded"
