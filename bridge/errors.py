"""The bridge's error hierarchy: every failure says whether a retry can fix it.

The entry points map the classes onto their transport: a *transient* error is raised so that
Service Bus redelivers or Event Grid retries; a *permanent* one is recorded with its reason and the
message is answered as handled, because no change of configuration or deployment will ever make
the same input succeed. A *blocked* one is what an operator fixes (a wrong secret, a role still
propagating, a consumer DAG not deployed yet): the work stays unsettled, is retried with backoff
until a deadline, and shows wherever an operator looks (docs/reliability.md has the taxonomy).
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class PermanentError(BridgeError):
    """No retry can fix this: bad input, a policy violation, a 4xx that stays a 4xx."""


class TransientError(BridgeError):
    """A retry may fix this: network, 5xx, 429, a dependency that is down, a busy claim."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BlockedError(TransientError):
    """An operator's fix is missing: credentials refused, a role not granted (yet), an asset or a
    DAG Airflow does not know (yet), a Key Vault reference that does not resolve. Not settled and
    not concluded: retried with backoff until `BRIDGE_BLOCKED_GIVE_UP_SECONDS`, only then failed.

    Raised where it is not handled as such, it is transient: the transport retries, nothing is
    lost. `cause` is the reason's class, which `/api/health` may show (never a secret)."""

    CREDENTIALS = "credentials"  # 401, a token refused, a password Airflow does not accept
    PERMISSION = "permission"  # 403: the identity lacks a role (or it is still propagating)
    MISSING_ASSET = "missing-asset"  # no parsed DAG references the asset yet
    MISSING_DAG = "missing-dag"  # the DAG to trigger is not parsed yet
    KEY_VAULT = "key-vault"  # an app setting still reads @Microsoft.KeyVault(...): unresolved
    VERSION = "version"  # this deployment cannot do it yet; a newer version of the bridge can
    # An Azure ML resource an operation needs is not there (yet): a model a DAG registers next,
    # an endpoint or deployment still being created, a job whose submission is on its way.
    MISSING_RESOURCE = "missing-resource"

    def __init__(self, message: str, *, cause: str, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.cause = cause


class AmbiguousError(TransientError):
    """A call failed after it left: the other side may have acted (a lost reply, a timeout, a 5xx
    from a proxy). The next attempt must find out whether the effect exists before it acts again."""


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from an HTTP Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class InvalidSubmission(PermanentError):
    """The submission does not match the v1 contract (schema, size, JSON)."""


class PolicyViolation(PermanentError):
    """The submission is well-formed but the governance policy refuses it."""


class InvalidEvent(PermanentError):
    """An event delivery is malformed: not JSON, not an event, a required field missing."""


class ConfigurationError(PermanentError):
    """A setting is missing or malformed; names the setting, never its value."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's own first line, bounded (SDK messages run to pages), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
