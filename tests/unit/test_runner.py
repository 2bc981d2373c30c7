"""The pure parts of running operations: how a deployment's traffic share changes the endpoint's."""

from __future__ import annotations

import pytest

from bridge.runner import dumps, loads, traffic_after


@pytest.mark.parametrize(
    ("current", "deployment", "wanted", "expected"),
    [
        # Unset: a first deployment takes everything; on a live endpoint nothing changes.
        ({}, "blue", None, {"blue": 100}),
        ({"blue": 0}, "blue", None, {"blue": 100}),
        ({"blue": 100}, "green", None, None),
        ({"blue": 100, "green": 0}, "green", None, None),
        # Blue/green: green at 0 % leaves blue alone; then all of it, then a share.
        ({"blue": 100}, "green", 0, None),
        ({"blue": 100}, "green", 100, {"green": 100}),
        ({"blue": 100}, "green", 10, {"blue": 90, "green": 10}),
        # The others keep their proportions, rounded so that the map adds up to 100.
        ({"a": 50, "b": 50}, "c", 33, {"a": 34, "b": 33, "c": 33}),
        ({"a": 70, "b": 30}, "a", 40, {"a": 40, "b": 60}),
        # Already so: nothing to write.
        ({"blue": 90, "green": 10}, "green", 10, None),
        ({"green": 100}, "green", 100, None),
        # Alone on the endpoint: it serves all or nothing.
        ({}, "blue", 30, {"blue": 100}),
        ({}, "blue", 0, None),
    ],
)
def test_traffic_after_a_deployment(
    current: dict[str, int], deployment: str, wanted: int | None, expected: dict[str, int] | None
) -> None:
    after = traffic_after(current, deployment, wanted)
    assert after == expected
    if after:
        assert sum(after.values()) == 100


def test_a_records_result_round_trips_and_reads_empty_when_unset() -> None:
    assert loads(dumps({"version": "3", "id": "x"})) == {"version": "3", "id": "x"}
    assert loads(None) == {} and loads("") == {} and loads("[1]") == {}
