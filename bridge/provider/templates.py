"""Jinja for an operator's templated fields, reading the asset event that started the DAG run.

A DAG scheduled on an asset the bridge posts to reads what the operation or job produced from the
event's `extra` (docs/dags.md lists its keys): `extra["result"]` after an operation, `outputs`
after a job. `from_triggering_event("result", "version")` is the template

    {{ (triggering_asset_events.values() | first | sort(attribute='timestamp') | last)
       .extra['result']['version'] }}

which a templated field renders when the task runs: the newest event on the DAG's schedule
asset, so that when events land together (docs/dags.md, "One caution") the run acts on the
latest one. A DAG scheduled on several assets names the one to read, `asset=`. Pure text:
nothing here imports Airflow.
"""

from __future__ import annotations

from typing import Any

NEWEST_TRIGGERING_EVENT = (
    "(triggering_asset_events.values() | first | sort(attribute='timestamp') | last)"
)
_NEWEST_ON_ASSET = (
    "(triggering_asset_events.values() | sum(start=[])"
    " | selectattr('asset.uri', 'equalto', {uri!r}) | sort(attribute='timestamp') | last)"
)


def from_triggering_event(*keys: str, asset: Any = None) -> str:
    """A template for `extra[keys[0]][keys[1]]...` of the newest triggering asset event.

    `asset` (an `Asset` or its URI) picks the events of one asset, for a DAG scheduled on
    several. A run with no such event (one started by hand) fails to render it, naming the
    undefined value, before anything is sent.
    """
    if not keys:
        raise ValueError("name at least one key of the event's extra, such as 'result'")
    event = NEWEST_TRIGGERING_EVENT
    if asset is not None:
        event = _NEWEST_ON_ASSET.format(uri=str(getattr(asset, "uri", asset)))
    path = "".join(f"[{key!r}]" for key in keys)
    return "{{ " + event + ".extra" + path + " }}"


__all__ = ["NEWEST_TRIGGERING_EVENT", "from_triggering_event"]
