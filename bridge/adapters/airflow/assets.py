"""Airflow's asset ids by URI: looked up once, then cached, so that an effect costs one call.

Airflow's API takes an asset's id, not its URI (apache/airflow#53615), and `get_assets` matches
`uri_pattern` as a case-insensitive substring. A miss reads the URI's whole "folder" (up to its
last `/`) in pages, at most once a minute: a bridge whose jobs route to `models/churn`,
`models/fraud`, ... pays one paged read for the lot instead of one read per asset.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from bridge.adapters.airflow.session import Session
from bridge.errors import BlockedError

if TYPE_CHECKING:
    from airflow_client.client import AssetResponse

# A miss reads up to this many pages (of `page_size`, 100 by default: Airflow's own cap,
# api.maximum_page_limit), at most once a minute per folder.
FILL_PAGES = 20
REFILL_SECONDS = 60.0
PREFIX_MIN = len("x://")


class AssetIds:
    def __init__(self, session: Session, page_size: int = 100) -> None:
        self.session = session
        self.page_size = page_size
        self._ids: dict[str, int] = {}
        self._filled: dict[str, float] = {}  # URI prefix -> when its assets were last read

    def __call__(self, uri: str) -> int:
        """Airflow's id of the asset with exactly this URI; `BlockedError` if no parsed DAG
        references it (yet)."""
        cached = self._ids.get(uri)
        if cached is None:
            self._fill(uri)
            cached = self._ids.get(uri)
        if cached is None:
            cached = self._ids[uri] = self._find(uri)
        return cached

    def forget(self, uri: str) -> None:
        """The cached id went stale (the asset was removed): look it up again next time."""
        self._ids.pop(uri, None)

    def _fill(self, uri: str) -> None:
        prefix = uri[: uri.rfind("/") + 1]
        if len(prefix) < PREFIX_MIN or "://" not in prefix:
            return  # no folder to speak of: the URI is looked up on its own
        now = time.monotonic()
        if now - self._filled.get(prefix, -math.inf) < REFILL_SECONDS:
            return
        self._filled[prefix] = now
        offset = 0
        for _ in range(FILL_PAGES):
            assets, total = self._page(prefix, offset)
            for asset in assets:
                if asset.uri.startswith(prefix):  # uri_pattern also matches mid-string
                    self._ids[asset.uri] = int(asset.id)
            offset += len(assets)
            if not assets or offset >= total:
                return

    def _find(self, uri: str) -> int:
        offset = 0
        while True:
            assets, total = self._page(uri, offset)
            # uri_pattern is a case-insensitive substring match: keep only the exact URI.
            for asset in assets:
                if asset.uri == uri:
                    return int(asset.id)
            offset += len(assets)
            if not assets or offset >= total:
                raise BlockedError(
                    f"no DAG references the asset URI {uri!r} in Airflow at "
                    f"{self.session.base_url} (yet): an asset exists only once a parsed DAG "
                    "schedules on it or produces it",
                    cause=BlockedError.MISSING_ASSET,
                )

    def _page(self, pattern: str, offset: int) -> tuple[list[AssetResponse], int]:
        from airflow_client.client import AssetApi

        session = self.session
        page = session.call(
            "get_assets",
            pattern,
            lambda: AssetApi(session.client).get_assets_with_http_info(
                uri_pattern=pattern,
                order_by=["id"],  # a stable order, so that paging neither skips nor repeats
                limit=self.page_size,
                offset=offset,
                _request_timeout=session.timeout,
            ),
        )
        return list(page.assets), int(page.total_entries)
