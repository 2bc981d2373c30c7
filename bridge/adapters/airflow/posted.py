"""Whether an effect's asset event exists in Airflow: asked only after an attempt that may have
posted it (a lost reply, a lapsed lease), and readable in spite of apache/airflow#71360.

First the asset's own record: if its last event is older than the first attempt, nothing was
posted. That read is immune to #71360 (3.3.2 answers 500 to an event listing that includes an
event whose run is still queued). Only then the listing from that time: page by page, and one
event a page where a page fails, so that a single unreadable event hides nothing else. If the
effect's event is not found but some event could not be read, the answer is unknown:
`TransientError`, and the caller asks again later rather than posting twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bridge.adapters.airflow.assets import AssetIds
from bridge.adapters.airflow.session import Session
from bridge.errors import TransientError

# Clocks of the bridge and Airflow (both NTP-synced in practice) may differ by this much: an event
# Airflow stamped up to this long before the bridge's first attempt may still be the bridge's.
CLOCK_SKEW_SECONDS = 30.0
RECOVERY_PAGE = 100


class PostedCheck:
    def __init__(self, session: Session, asset_ids: AssetIds) -> None:
        self.session = session
        self.asset_ids = asset_ids

    def __call__(self, uri: str, effect_id: str, since: float) -> bool:
        """Whether an event on `uri` has `extra.effect_id == effect_id`, from `since` on."""
        from airflow_client.client import AssetApi

        session = self.session
        asset_id = self.asset_ids(uri)
        asset = session.call(
            "get_asset",
            uri,
            lambda: AssetApi(session.client).get_asset_with_http_info(
                asset_id, _request_timeout=session.timeout
            ),
        )
        last = asset.last_asset_event
        start = datetime.fromtimestamp(since - CLOCK_SKEW_SECONDS, UTC)
        if last is None or last.timestamp is None or last.timestamp < start:
            return False
        unreadable, offset = 0, 0
        while True:
            found, unread, full = self._look(uri, asset_id, start, offset, effect_id)
            if found:
                return True
            unreadable += unread
            if not full:
                break
            offset += RECOVERY_PAGE
        if unreadable:
            raise TransientError(
                f"Airflow cannot list {unreadable} event(s) on {uri} yet (apache/airflow#71360: "
                f"a run they started is still queued): whether {effect_id} exists is unknown"
            )
        return False

    def all_on(self, uri: str) -> list[dict[str, Any]]:
        """The `extra` of every event on an asset, oldest first (operators and the chaos count)."""
        asset_id = self.asset_ids(uri)
        start = datetime.fromtimestamp(0, UTC)
        found: list[dict[str, Any]] = []
        while True:
            page = self._events(uri, asset_id, start, len(found), RECOVERY_PAGE)
            found += page
            if len(page) < RECOVERY_PAGE:
                return found

    def _look(
        self, uri: str, asset_id: int, start: datetime, offset: int, effect_id: str
    ) -> tuple[bool, int, bool]:
        """Look for the effect in one page of events from `start`: whether it is there, how many
        events could not be read, and whether the page was full (more may follow)."""
        try:
            extras = self._events(uri, asset_id, start, offset, RECOVERY_PAGE)
        except TransientError:
            unreadable = 0
            for index in range(offset, offset + RECOVERY_PAGE):  # one event a page
                try:
                    one = self._events(uri, asset_id, start, index, 1)
                except TransientError:
                    unreadable += 1
                    continue
                if not one:
                    return False, unreadable, False
                if one[0].get("effect_id") == effect_id:
                    return True, unreadable, False
            return False, unreadable, True
        found = any(extra.get("effect_id") == effect_id for extra in extras)
        return found, 0, len(extras) == RECOVERY_PAGE

    def _events(
        self, uri: str, asset_id: int, start: datetime, offset: int, limit: int
    ) -> list[dict[str, Any]]:
        from airflow_client.client import AssetApi

        session = self.session
        page = session.call(
            "get_asset_events",
            uri,
            lambda: AssetApi(session.client).get_asset_events_with_http_info(
                asset_id=asset_id,
                timestamp_gte=start,
                order_by=["timestamp"],
                limit=limit,
                offset=offset,
                _request_timeout=session.timeout,
            ),
        )
        return [dict(event.extra or {}) for event in page.asset_events]
