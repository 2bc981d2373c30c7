"""One Airflow deployment's API session: the generated client, its bearer token, and each call.

The token comes from Airflow's auth manager (`POST /auth/token`) and is renewed a minute before
the `exp` its JWT payload states, or once when Airflow refuses it (401 or 403); or it is a static
API token (from Key Vault), used as it is. Each call is one audit record (operation, target,
status, latency, the identity), and its failures leave as bridge errors (`failures`).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from bridge import audit
from bridge.adapters.airflow.failures import airflow_detail, failure, unreachable
from bridge.errors import (
    BlockedError,
    ConfigurationError,
    PermanentError,
    TransientError,
    retry_after_seconds,
)
from bridge.signing import KEY_VAULT_REFERENCE

if TYPE_CHECKING:
    from airflow_client.client import ApiClient
    from airflow_client.client.api_response import ApiResponse
    from airflow_client.client.exceptions import ApiException

T = TypeVar("T")

RENEW_EARLY_SECONDS = 60.0
# Concurrent invocations share one client: keep a connection for each (urllib3 drops and reopens
# the ones over the pool's size, 5 per CPU by default).
POOL_SIZE = 32


class Session:
    def __init__(
        self,
        base_url: str,
        username: str = "",
        password: str = "",
        *,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        from airflow_client.client import ApiClient, Configuration

        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"Airflow base URL is not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        # What the audit trail names: the user, or that a static token is used (never a secret).
        self.identity = "static API token" if token else f"user {username}"
        self._static = token is not None
        self.timeout = float(timeout)  # the generated client validates it as a strict float
        configuration = Configuration(host=self.base_url)
        configuration.connection_pool_maxsize = POOL_SIZE
        self.client: ApiClient = ApiClient(configuration)
        self._expires_at: float | None = None
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
                return request()
        except ApiException as exc:
            record.status = exc.status
            raise failure(what, exc, writes=writes) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise unreachable(what, self.base_url, exc, writes=writes) from exc


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (Airflow verifies; we only schedule)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
        return None
