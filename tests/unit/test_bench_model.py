"""The computed parts of the benchmarks (bench/calls.py, bench/cost.py): the schedules they
count and the bill's arithmetic. The measured parts run in tests/integration/test_bench.py."""

from __future__ import annotations

import pytest

from bench import cost
from bench.calls import reconcile_reads
from bench.report import percentile, table


@pytest.mark.parametrize(
    ("seconds", "reads"),
    [(60, 0), (600, 0), (601, 1), (3600, 3), (28800, 10)],
)
def test_reconciliation_reads_a_running_job_at_10_20_40_80_minutes_then_hourly(
    seconds: float, reads: int
) -> None:
    # Due at 600 s, then +600, +1200, +2400, then +3600 each: 600, 1200, 2400, 4800, 8400, ...
    assert reconcile_reads(seconds) == reads


def test_bill_is_each_count_times_its_price() -> None:
    bill = cost.bridge_per_1000(jobs_per_day=1000, reconcile_reads_per_job=0)

    executions = 1000 * (1 + cost.EVENTS_DELIVERED_PER_JOB) + cost.SWEEPS_PER_DAY
    assert bill["executions"] == executions
    gb_s = executions * cost.MIN_BILLED_SECONDS * cost.INSTANCE_GB
    assert bill["items"]["Functions GB-s"] == round(gb_s * 0.000026, 4)
    assert bill["total_usd"] == pytest.approx(sum(bill["items"].values()), abs=1e-3)


def test_blocking_poller_pays_a_slot_for_as_long_as_the_job_runs() -> None:
    hour = cost.poller_per_1000(3600)

    assert hour["slot_hours"] == 1000
    assert hour["total_usd"] == round(1000 / cost.WORKER_SLOTS_PER_VM * 0.192, 2)


def test_every_price_names_its_source() -> None:
    for name, price in cost.PRICES.items():
        assert price.source.startswith("https://"), name


def test_percentile_is_a_sample_that_was_seen() -> None:
    samples = [0.5, 0.1, 0.3, 0.2, 0.4]
    assert (percentile(samples, 50), percentile(samples, 99), percentile(samples, 1)) == (
        0.3,
        0.5,
        0.1,
    )


def test_table_right_aligns_numbers_and_shows_missing_values_as_a_dash() -> None:
    text = table("t", ["name", "value"], [["a", 1.5], ["bb", float("nan")]])
    assert text.splitlines()[-2:] == ["a      1.50", "bb        -"]
