"""NCRONTAB schedules fire when the Functions timer trigger would, and bad ones name the problem."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.errors import ConfigurationError
from bridge.ncrontab import Schedule

T0 = datetime(2026, 11, 26, 10, 47, 13, 500_000, tzinfo=UTC)  # a Thursday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0 */5 * * * *", datetime(2026, 11, 26, 10, 50, 0, tzinfo=UTC)),
        ("*/2 * * * * *", datetime(2026, 11, 26, 10, 47, 14, tzinfo=UTC)),
        ("* * * * * *", datetime(2026, 11, 26, 10, 47, 14, tzinfo=UTC)),
        ("30 0 9 * * *", datetime(2026, 11, 27, 9, 0, 30, tzinfo=UTC)),
        ("0 0 0 1 Jan *", datetime(2027, 1, 1, 0, 0, 0, tzinfo=UTC)),
        ("0 0 12 * * Mon-Fri", datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)),
        ("0 0 12 * * sun", datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)),
        ("0 0 12 * * 7", datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)),
        ("0 15,45 10 * * *", datetime(2026, 11, 27, 10, 15, 0, tzinfo=UTC)),
        ("0 0 0 29 2 *", datetime(2028, 2, 29, 0, 0, 0, tzinfo=UTC)),
        ("5-10/5 * * * * *", datetime(2026, 11, 26, 10, 48, 5, tzinfo=UTC)),
    ],
)
def test_next_firing_is_the_first_matching_second_after_now(text: str, expected: datetime) -> None:
    assert Schedule.parse(text).next_after(T0) == expected


def test_firings_step_forward_without_repeating() -> None:
    schedule = Schedule.parse("*/20 * * * * *")
    first = schedule.next_after(T0)
    second = schedule.next_after(first)
    assert (first.second, second.second, (second - first).total_seconds()) == (20, 40, 20)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("*/5 * * * *", "has 5 fields; NCRONTAB takes 6"),
        ("0 61 * * * *", "minute field '61' is outside 0-59"),
        ("0 0 25 * * *", "hour field '25' is outside 0-23"),
        ("0 0 0 * Foo *", "month field 'Foo' is not a number"),
        ("0 */0 * * * *", "minute field '*/0' is outside"),
        ("0 0 0 31 2 *", "never fires"),
    ],
)
def test_a_bad_schedule_names_the_field_and_the_problem(text: str, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named.replace("*", r"\*")):
        Schedule.parse(text).next_after(T0)
