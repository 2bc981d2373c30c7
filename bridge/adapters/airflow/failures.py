"""What Airflow's answers mean, as bridge errors: transient for what a retry can fix (network,
5xx, 429), blocked for what an operator fixes (credentials or a role refused, an asset or DAG
Airflow does not know yet), permanent for what no fix of theirs changes (other 4xx). A write that
failed after it left (no reply, a read timeout, a 5xx) is `AmbiguousError`: Airflow may have
acted."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from bridge.errors import (
    AmbiguousError,
    BlockedError,
    PermanentError,
    TransientError,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from airflow_client.client.exceptions import ApiException


def failure(
    what: str, exc: ApiException, *, writes: bool = False
) -> PermanentError | TransientError:
    """The bridge error for an HTTP error answer to `what` (an operation and its target)."""
    status = int(exc.status or 0)
    message = f"Airflow {what} failed with HTTP {status}: {airflow_detail(exc.body)}"
    if status == 429:
        return TransientError(message, retry_after=retry_after_seconds(header(exc, "Retry-After")))
    if status == 0 or status >= 500:
        # A 5xx may come from a proxy after Airflow acted, or from Airflow after its commit.
        return AmbiguousError(message) if writes else TransientError(message)
    if status in (401, 403):  # after one renewed token: the user, its role, or the secret
        cause = BlockedError.CREDENTIALS if status == 401 else BlockedError.PERMISSION
        return BlockedError(message, cause=cause)
    if status == 404:  # a DAG not parsed yet, or an asset removed since it was cached
        asset = "asset" in what.split("(", 1)[0]
        return BlockedError(
            message, cause=BlockedError.MISSING_ASSET if asset else BlockedError.MISSING_DAG
        )
    return PermanentError(message)


def unreachable(what: str, base_url: str, exc: Exception, *, writes: bool) -> TransientError:
    """A transport failure: ambiguous for a write that may have reached Airflow."""
    if writes and not never_sent(exc):
        return AmbiguousError(
            f"Airflow {what}: {base_url} failed ({type(exc).__name__}: {exc}); "
            "it may have been done"
        )
    return TransientError(
        f"Airflow {what}: {base_url} is unreachable ({type(exc).__name__}: {exc})"
    )


def never_sent(exc: Exception) -> bool:
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
