"""One Airflow deployment's API session: the generated client, its bearer token, and each call.

The token comes from one of three places:
- Airflow's auth manager (`POST /auth/token`, the bridge's user and password), renewed a minute
  before the `exp` its JWT payload states, or once when Airflow refuses it (401 or 403);
- a static API token (from Key Vault), used as it is;
- the managed identity (`EntraAccess`): an Entra ID access token for Airflow's app registration,
  which Airflow's auth manager checks (`bridge.provider.entra`). No secret: azure-identity gets
  and caches it, and it is asked again every few minutes and when Airflow refuses it.

Each call is one audit record (operation, target, status, latency, the identity), and its failures
leave as bridge errors (`failures`).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from bridge import audit
from bridge.adapters.airflow.failures import airflow_detail, failure, unreachable
from bridge.errors import (
    BlockedError,
    ConfigurationError,
    PermanentError,
    TransientError,
    first_line,
    retry_after_seconds,
)
from bridge.signing import KEY_VAULT_REFERENCE

if TYPE_CHECKING:
    from airflow_client.client import ApiClient
    from airflow_client.client.api_response import ApiResponse
    from airflow_client.client.exceptions import ApiException
    from azure.core.credentials import TokenCredential

T = TypeVar("T")

RENEW_EARLY_SECONDS = 60.0
# Concurrent invocations share one client: keep a connection for each (urllib3 drops and reopens
# the ones over the pool's size, 5 per CPU by default).
POOL_SIZE = 32
# How often the managed identity's token is asked for again at most (azure-identity answers from
# its cache, and refreshes before expiry on its own schedule).
ENTRA_RECHECK_SECONDS = 300.0


@dataclass(frozen=True)
class EntraAccess:
    """The managed identity's Entra ID access token for Airflow's app registration."""

    credential: TokenCredential
    audience: str  # the app's application id URI (api://...) or client id
    client_id: str | None = None  # a user-assigned identity's; None: system-assigned

    @property
    def scope(self) -> str:
        audience = self.audience.rstrip("/")
        return audience if audience.endswith("/.default") else f"{audience}/.default"

    @property
    def identity(self) -> str:
        return f"managed identity {self.client_id or '(system-assigned)'} (Entra ID)"


class Session:
    def __init__(
        self,
        base_url: str,
        username: str = "",
        password: str = "",
        *,
        token: str | None = None,
        entra: EntraAccess | None = None,
        timeout: float = 10.0,
    ) -> None:
        from airflow_client.client import ApiClient, Configuration

        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"Airflow base URL is not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        # What the audit trail names: the user, the identity, or that a static token is used.
        self.identity = (
            entra.identity if entra else "static API token" if token else f"user {username}"
        )
        self.auth = "entra" if entra else "static token" if token is not None else "password"
        self._static = token is not None
        self._entra = entra
        self.timeout = float(timeout)  # the generated client validates it as a strict float
        configuration = Configuration(host=self.base_url)
        configuration.connection_pool_maxsize = POOL_SIZE
        self.client: ApiClient = ApiClient(configuration)
        self._expires_at: float | None = None
        self._recheck_at = 0.0
        self._token_lock = threading.Lock()
        if token is not None:
            self.client.configuration.access_token = token

    # -- the token ------------------------------------------------------------------------------

    @property
    def access_token(self) -> str | None:
        token = self.client.configuration.access_token
        return str(token) if token is not None else None

    @access_token.setter
    def access_token(self, token: str) -> None:
        self.client.configuration.access_token = token
        self._expires_at = jwt_expiry(token)

    def ensure_token(self) -> None:
        if self._static:
            if (self.access_token or "").startswith(KEY_VAULT_REFERENCE):
                raise BlockedError(
                    "the Airflow API token setting is a Key Vault reference the platform has not "
                    "resolved (the identity's access to the vault, or the secret)",
                    cause=BlockedError.KEY_VAULT,
                )
            return
        now = time.time()
        expiring = self._expires_at is not None and now >= self._expires_at - RENEW_EARLY_SECONDS
        recheck = self._entra is not None and now >= self._recheck_at
        if self.access_token is None or expiring or recheck:
            self._renew_token(stale=self.access_token)

    @property
    def expires_at(self) -> float | None:
        """When the token in use expires (epoch seconds), if it says; never the token."""
        return self._expires_at

    def _renew_token(self, stale: str | None) -> None:
        with self._token_lock:
            # Another thread may have renewed it while this one waited.
            if self.access_token == stale:
                self.access_token = (
                    self._identity_token() if self._entra is not None else self._request_token()
                )

    def _identity_token(self) -> str:
        from azure.core.exceptions import ClientAuthenticationError

        assert self._entra is not None
        try:
            token = self._entra.credential.get_token(self._entra.scope)
        except ClientAuthenticationError as exc:
            raise BlockedError(
                f"the {self._entra.identity} gets no token for Airflow's app registration "
                f"({self._entra.scope}): {first_line(exc)}",
                cause=BlockedError.CREDENTIALS,
            ) from exc
        now = time.time()
        self._recheck_at = now + min(ENTRA_RECHECK_SECONDS, max(0.0, token.expires_on - now) / 2)
        return token.token

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
                response = self.client.call_api(
                    "POST",
                    f"{self.base_url}/auth/token",
                    header_params={
                        "Content-Type": "application/json",
                        "Accept": "application/json",
                    },
                    body={"username": self._username, "password": self._password},
                    _request_timeout=self.timeout,
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

    def _token_refused(self, exc: ApiException) -> BlockedError:
        if self._entra is not None:
            return BlockedError(
                f"Airflow at {self.base_url} refused the {self._entra.identity}'s token for "
                f"{self._entra.audience} with HTTP {exc.status}: {airflow_detail(exc.body)}. The "
                "identity lacks the app role (or it is still propagating), the FAB user the role "
                "maps to does not exist, or Airflow's auth manager does not trust this tenant or "
                "audience: the API server's log says which (docs/airflow-identity.md)",
                cause=BlockedError.CREDENTIALS if exc.status == 401 else BlockedError.PERMISSION,
            )
        return BlockedError(
            f"Airflow at {self.base_url} refused the static API token (BRIDGE_AIRFLOW_TOKEN) with "
            f"HTTP {exc.status}: {airflow_detail(exc.body)}. It has expired, was not signed by "
            "this Airflow, or its user lacks the permission: replace the token in Key Vault",
            cause=BlockedError.CREDENTIALS,
        )

    # -- calls ----------------------------------------------------------------------------------

    def call(
        self,
        operation: str,
        target: str,
        request: Callable[[], ApiResponse[T]],
        *,
        writes: bool = False,
    ) -> T:
        """Run one API call; renew the token once if refused; map failures onto bridge errors.

        For a write (`writes`), a failure after the request left is `AmbiguousError`. Each call
        is one audit record: operation, target, status, latency, and the bridge's user.
        """
        self.ensure_token()
        with audit.call("airflow", operation, target, self.identity) as record:
            response = self._attempt(f"{operation}({target})", request, record, writes=writes)
            record.status = response.status_code
            return response.data

    def _attempt(
        self,
        what: str,
        request: Callable[[], ApiResponse[T]],
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
                return request()
            # Airflow answers 401 for an expired token but 403 for one it cannot verify (signed
            # with another JWT secret, e.g. before a restart); a real 403 costs one retry.
            except (UnauthorizedException, ForbiddenException) as exc:
                if self._static:
                    raise self._token_refused(exc) from exc
                self._renew_token(stale=self.access_token)
                if self._entra is None:
                    return request()
                try:
                    return request()
                except (UnauthorizedException, ForbiddenException) as again:
                    if not token_refused(again):
                        raise  # the token was taken; a permission is missing (FAB's roles)
                    record.status = again.status
                    raise self._token_refused(again) from again
        except ApiException as exc:
            record.status = exc.status
            raise failure(what, exc, writes=writes) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise unreachable(what, self.base_url, exc, writes=writes) from exc


# What Airflow's API answers when it refuses the token itself (not a permission of its user).
_TOKEN_REFUSALS = ("Invalid JWT token", "Token Expired", "Not authenticated")


def token_refused(exc: ApiException) -> bool:
    """Whether a 401 or 403 refused the token, rather than a permission of the user it names."""
    return exc.status == 401 or airflow_detail(exc.body) in _TOKEN_REFUSALS


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (Airflow verifies; we only schedule)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
        return None
