"""Airflow through its v2 REST API (`apache-airflow-client`): the `bridge.ports.Airflow` adapter.

One `ApiClient` per instance, reused for every call. The bearer token comes from Airflow's auth
manager (`POST /auth/token`) and is renewed a minute before the `exp` its JWT payload states, or
once when Airflow refuses it (401 or 403). Asset ids are cached, and a miss reads the URI's whole
folder (`azureml://models/...`) in one paged read, so an effect costs one HTTP call. Failures
leave as `bridge.errors`: transient for what a retry can fix (network, 5xx, 429), blocked for what
an operator fixes (credentials or a role refused, an asset or DAG Airflow does not know yet, a Key
Vault reference not resolved), permanent for what no fix of theirs changes (other 4xx). A write
that failed after it left (no reply, a read timeout, a 5xx) is `AmbiguousError`: Airflow may have
acted, so the caller asks `asset_event_posted` before writing again.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from bridge import audit
from bridge.errors import (
    AmbiguousError,
    BlockedError,
    ConfigurationError,
    PermanentError,
    TransientError,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from airflow_client.client import ApiClient, AssetResponse
    from airflow_client.client.api_response import ApiResponse
    from airflow_client.client.exceptions import ApiException

T = TypeVar("T")

RENEW_EARLY_SECONDS = 60.0
# Clocks of the bridge and Airflow (both NTP-synced in practice) may differ by this much: an event
# Airflow stamped up to this long before the bridge's first attempt may still be the bridge's.
CLOCK_SKEW_SECONDS = 30.0
RECOVERY_PAGE = 100
# The asset-id cache: a miss reads the URI's whole "folder", up to this many pages (of
# `page_size`, 100 by default: Airflow's own cap, api.maximum_page_limit), at most once a minute.
FILL_PAGES = 20
POOL_SIZE = 32
REFILL_SECONDS = 60.0
PREFIX_MIN = len("x://")
# What App Service leaves in a setting whose Key Vault reference it could not resolve.
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("


class AirflowRest:
    """The bridge's effects on one Airflow deployment: asset events and DAG runs."""

    def __init__(
        self,
        base_url: str,
        username: str = "",
        password: str = "",
        *,
        token: str | None = None,
        timeout: float = 10.0,
        page_size: int = 100,
    ) -> None:
        """Signs in as `username` (a token from `POST /auth/token`, renewed before it expires),
        or, with `token`, uses that API token as it is (from Key Vault; never renewed here)."""
        from airflow_client.client import ApiClient, Configuration

        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"Airflow base URL is not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        # What the audit trail names: the user, or that a static token is used (never a secret).
        self.identity = "static API token" if token else f"user {username}"
        self._static = token is not None
        # The generated client validates its timeout as a strict float.
        self._timeout = float(timeout)
        self._page_size = page_size
        configuration = Configuration(host=self.base_url)
        # Concurrent invocations share this client: keep a connection for each (urllib3 drops
        # and reopens the ones over the pool's size, 5 per CPU by default).
        configuration.connection_pool_maxsize = POOL_SIZE
        self._api_client = ApiClient(configuration)
        self._expires_at: float | None = None
        self._token_lock = threading.Lock()
        self._asset_ids: dict[str, int] = {}
        self._filled: dict[str, float] = {}  # URI prefix -> when its assets were last read
        if token is not None:
            self._api_client.configuration.access_token = token

    # -- the port -------------------------------------------------------------------------------

    def post_asset_event(
        self, uri: str, extra: Mapping[str, Any], partition_key: str | None = None
    ) -> None:
        from airflow_client.client import AssetApi, CreateAssetEventsBody
        from airflow_client.client.exceptions import NotFoundException

        asset_id = self.asset_id(uri)
        body = CreateAssetEventsBody(
            asset_id=asset_id, extra=dict(extra), partition_key=partition_key
        )
        try:
            self._call(
                "create_asset_event",
                uri,
                lambda: AssetApi(self._api_client).create_asset_event_with_http_info(
                    body, _request_timeout=self._timeout
                ),
                writes=True,
            )
        except BlockedError as exc:
            if isinstance(exc.__cause__, NotFoundException):
                # The cached id went stale (the asset was removed): look it up again next time.
                self._asset_ids.pop(uri, None)
            raise

    def asset_event_posted(self, uri: str, effect_id: str, since: float) -> bool:
        """Whether Airflow holds an event on `uri` whose `extra.effect_id` is `effect_id`.

        `since` (epoch seconds) is when the first attempt began; nothing earlier is read. First the
        asset's own record: if its last event is older, nothing was posted. That read is immune to
        apache/airflow#71360 (3.3.2 answers 500 to an event listing that includes an event whose
        run is still queued). Only then the listing from `since`: page by page, and one event a
        page where a page fails, so that a single unreadable event hides nothing else. If the
        effect's event is not found but some event could not be read, the answer is unknown:
        `TransientError`, and the caller asks again later rather than posting twice.
        """
        from airflow_client.client import AssetApi

        asset_id = self.asset_id(uri)
        asset = self._call(
            "get_asset",
            uri,
            lambda: AssetApi(self._api_client).get_asset_with_http_info(
                asset_id, _request_timeout=self._timeout
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

    def events_on(self, uri: str) -> list[dict[str, Any]]:
        """The `extra` of every event on an asset, oldest first (operators and the chaos count)."""
        asset_id = self.asset_id(uri)
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

        page = self._call(
            "get_asset_events",
            uri,
            lambda: AssetApi(self._api_client).get_asset_events_with_http_info(
                asset_id=asset_id,
                timestamp_gte=start,
                order_by=["timestamp"],
                limit=limit,
                offset=offset,
                _request_timeout=self._timeout,
            ),
        )
        return [dict(event.extra or {}) for event in page.asset_events]

    def trigger_dag_run(self, dag_id: str, run_id: str, conf: Mapping[str, Any]) -> bool:
        from airflow_client.client import DagRunApi, TriggerDAGRunPostBody
        from airflow_client.client.exceptions import ConflictException

        body = TriggerDAGRunPostBody(dag_run_id=run_id, conf=dict(conf), logical_date=None)
        try:
            self._call(
                "trigger_dag_run",
                f"{dag_id}/{run_id}",
                lambda: DagRunApi(self._api_client).trigger_dag_run_with_http_info(
                    dag_id, body, _request_timeout=self._timeout
                ),
                writes=True,
            )
        except PermanentError as exc:
            if isinstance(exc.__cause__, ConflictException):
                return False
            raise
        return True

    # -- assets ---------------------------------------------------------------------------------

    def asset_id(self, uri: str) -> int:
        """Airflow's id of the asset with exactly this URI; looked up once, then cached.

        A miss reads every asset that shares the URI's prefix (up to its last `/`) in pages, up
        to `FILL_PAGES`, and caches them all: a bridge whose jobs route to `models/churn`,
        `models/fraud`, ... pays one paged read for the lot instead of one read per asset. Each
        prefix is read so at most once a minute; a URI still missing then is looked up alone.
        """
        cached = self._asset_ids.get(uri)
        if cached is None:
            self._fill(uri)
            cached = self._asset_ids.get(uri)
        if cached is None:
            cached = self._asset_ids[uri] = self._find_asset_id(uri)
        return cached

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
            assets, total = self._assets_page(prefix, offset)
            for asset in assets:
                if asset.uri.startswith(prefix):  # uri_pattern also matches mid-string
                    self._asset_ids[asset.uri] = int(asset.id)
            offset += len(assets)
            if not assets or offset >= total:
                return

    def _find_asset_id(self, uri: str) -> int:
        offset = 0
        while True:
            assets, total = self._assets_page(uri, offset)
            # uri_pattern is a case-insensitive substring match: keep only the exact URI.
            for asset in assets:
                if asset.uri == uri:
                    return int(asset.id)
            offset += len(assets)
            if not assets or offset >= total:
                raise BlockedError(
                    f"no DAG references the asset URI {uri!r} in Airflow at {self.base_url} "
                    "(yet): an asset exists only once a parsed DAG schedules on it or produces it",
                    cause=BlockedError.MISSING_ASSET,
                )

    def _assets_page(self, pattern: str, offset: int) -> tuple[list[AssetResponse], int]:
        from airflow_client.client import AssetApi

        page = self._call(
            "get_assets",
            pattern,
            lambda: AssetApi(self._api_client).get_assets_with_http_info(
                uri_pattern=pattern,
                order_by=["id"],  # a stable order, so that paging neither skips nor repeats
                limit=self._page_size,
                offset=offset,
                _request_timeout=self._timeout,
            ),
        )
        return list(page.assets), int(page.total_entries)

    # -- authentication -------------------------------------------------------------------------

    @property
    def api_client(self) -> ApiClient:
        """The authenticated client (token fresh now), for calls the port does not cover."""
        self._ensure_token()
        return self._api_client

    @property
    def access_token(self) -> str | None:
        token = self._api_client.configuration.access_token
        return str(token) if token is not None else None

    @access_token.setter
    def access_token(self, token: str) -> None:
        """Use this token until it expires or Airflow refuses it (a token minted elsewhere)."""
        self._api_client.configuration.access_token = token
        self._expires_at = jwt_expiry(token)

    def check(self) -> None:
        """One authorized read (an asset page of one): whether this identity may use the API."""
        from airflow_client.client import AssetApi

        self._call(
            "get_assets",
            "(access check)",
            lambda: AssetApi(self._api_client).get_assets_with_http_info(
                limit=1, _request_timeout=self._timeout
            ),
        )

    def _ensure_token(self) -> None:
        if self._static:
            if (self.access_token or "").startswith(KEY_VAULT_REFERENCE):
                raise BlockedError(
                    "the Airflow API token setting is a Key Vault reference the platform has not "
                    "resolved (the identity's access to the vault, or the secret)",
                    cause=BlockedError.KEY_VAULT,
                )
            return
        if self.access_token is None or (
            self._expires_at is not None and time.time() >= self._expires_at - RENEW_EARLY_SECONDS
        ):
            self._renew_token(stale=self.access_token)

    def _renew_token(self, stale: str | None) -> None:
        with self._token_lock:
            # Another thread may have renewed it while this one waited.
            if self.access_token == stale:
                self.access_token = self._request_token()

    def _request_token(self) -> str:
        import urllib3

        unresolved = [name for name, value in (("username", self._username),
                                               ("password", self._password))
                      if value.startswith(KEY_VAULT_REFERENCE)]  # fmt: skip
        if unresolved:
            raise BlockedError(
                f"the Airflow {' and '.join(unresolved)} setting is a Key Vault reference the "
                "platform has not resolved (the identity's access to the vault, or the secret)",
                cause=BlockedError.KEY_VAULT,
            )

        with audit.call("airflow", "auth_token", self.base_url, self.identity) as call:
            try:
                response = self._api_client.call_api(
                    "POST",
                    f"{self.base_url}/auth/token",
                    header_params={
                        "Content-Type": "application/json",
                        "Accept": "application/json",
                    },
                    body={"username": self._username, "password": self._password},
                    _request_timeout=self._timeout,
                )
                payload = response.read()  # type: ignore[no-untyped-call]
            except urllib3.exceptions.HTTPError as exc:
                raise TransientError(f"Airflow at {self.base_url} is unreachable: {exc}") from exc
            call.status = status = int(response.status)
        if status in (401, 403):
            raise BlockedError(
                f"Airflow at {self.base_url} refused the credentials of user {self._username!r} "
                f"(HTTP {status}): a wrong or rotated password",
                cause=BlockedError.CREDENTIALS,
            )
        if status == 429 or status >= 500:
            raise TransientError(
                f"Airflow at {self.base_url} could not issue a token (HTTP {status})",
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        try:
            return str(json.loads(payload)["access_token"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError(
                f"POST {self.base_url}/auth/token answered HTTP {status} without an access_token"
            ) from exc

    # -- calls and their failures ---------------------------------------------------------------

    def _call(
        self,
        operation: str,
        target: str,
        call: Callable[[], ApiResponse[T]],
        *,
        writes: bool = False,
    ) -> T:
        """Run one API call; renew the token once if refused; map failures onto bridge errors.

        For a write (`writes`), a failure after the request left is `AmbiguousError`. Each call
        is one audit record: operation, target, status, latency, and the bridge's user.
        """
        self._ensure_token()
        with audit.call("airflow", operation, target, self.identity) as record:
            response = self._attempt(f"{operation}({target})", call, record, writes=writes)
            record.status = response.status_code
            return response.data

    def _attempt(
        self,
        what: str,
        call: Callable[[], ApiResponse[T]],
        record: audit.Call,
        *,
        writes: bool,
    ) -> ApiResponse[T]:
        import urllib3
        from airflow_client.client.exceptions import (
            ApiException,
            ForbiddenException,
            UnauthorizedException,
        )

        try:
            try:
                return call()
            # Airflow answers 401 for an expired token but 403 for one it cannot verify (signed
            # with another JWT secret, e.g. before a restart); a real 403 costs one retry.
            except (UnauthorizedException, ForbiddenException) as exc:
                if self._static:
                    raise self._token_refused(exc) from exc
                self._renew_token(stale=self.access_token)
                return call()
        except ApiException as exc:
            record.status = exc.status
            raise self._failure(what, exc, writes=writes) from exc
        except urllib3.exceptions.HTTPError as exc:
            message = f"Airflow {what}: {self.base_url} failed ({type(exc).__name__}: {exc})"
            if writes and not _never_sent(exc):
                raise AmbiguousError(f"{message}; it may have been done") from exc
            raise TransientError(
                f"Airflow {what}: {self.base_url} is unreachable ({type(exc).__name__}: {exc})"
            ) from exc

    def _token_refused(self, exc: ApiException) -> BlockedError:
        return BlockedError(
            f"Airflow at {self.base_url} refused the static API token (BRIDGE_AIRFLOW_TOKEN) with "
            f"HTTP {exc.status}: {airflow_detail(exc.body)}. It has expired, was not signed by "
            "this Airflow, or its user lacks the permission: replace the token in Key Vault",
            cause=BlockedError.CREDENTIALS,
        )

    def _failure(
        self, what: str, exc: ApiException, *, writes: bool = False
    ) -> PermanentError | TransientError:
        status = int(exc.status or 0)
        detail = airflow_detail(exc.body)
        message = f"Airflow {what} failed with HTTP {status}: {detail}"
        if status == 429:
            return TransientError(
                message, retry_after=retry_after_seconds(header(exc, "Retry-After"))
            )
        if status == 0 or status >= 500:
            # A 5xx may come from a proxy after Airflow acted, or from Airflow after its commit.
            return AmbiguousError(message) if writes else TransientError(message)
        if status in (401, 403):  # after one renewed token: the user, its role, or the secret
            cause = BlockedError.CREDENTIALS if status == 401 else BlockedError.PERMISSION
            return BlockedError(message, cause=cause)
        if status == 404:  # a DAG not parsed yet, or an asset removed since it was cached
            asset = "asset" in what.split("(", 1)[0]
            cause = BlockedError.MISSING_ASSET if asset else BlockedError.MISSING_DAG
            return BlockedError(message, cause=cause)
        return PermanentError(message)


def _never_sent(exc: Exception) -> bool:
    """Whether a urllib3 failure happened before the request reached the server."""
    import urllib3

    reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    return isinstance(
        reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
    )


def header(exc: ApiException, name: str) -> str | None:
    headers = exc.headers
    if headers is None:
        return None
    value = headers.get(name)
    return str(value) if value is not None else None


def airflow_detail(body: str | None) -> str:
    """Airflow's own explanation: the `detail` of its JSON error body (FastAPI's convention)."""
    if not body:
        return "(no response body)"
    try:
        detail = json.loads(body).get("detail", body)
    except (ValueError, AttributeError):
        return body[:500]
    return detail if isinstance(detail, str) else json.dumps(detail)[:500]


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (Airflow verifies; we only schedule)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
        return None
