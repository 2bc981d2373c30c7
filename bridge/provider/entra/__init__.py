"""Entra ID access tokens at Airflow's API server: the bridge signs in with its managed identity's
token instead of a password, and Airflow's auth manager checks it (`simple`, `fab`).

Airflow's own validator cannot take Entra's tokens beside its own: `[api_auth] trusted_jwks_url`
replaces Airflow's keys for the public and the execution API alike, Entra's `roles` array is not
the simple auth manager's `role`, and FAB reads `sub` as one of its user ids. So the auth managers
here look at a bearer token's issuer first. A token from a pinned Entra issuer is checked here and
only here (signature by a published key of that tenant, audience, lifetime, an app role); every
other token goes to Airflow's own check unchanged, so the UI, `/auth/token` and task tokens work
as before. The execution API never consults an auth manager: an Entra token can never act as a
task token, and `EntraTrust.check_audiences` refuses to start when its audience is one of Airflow's.

Settings, in Airflow's configuration (section `[azureml_bridge]`, or `AIRFLOW__AZUREML_BRIDGE__*`):

| option | |
|---|---|
| `entra_tenant_id` | the tenant: pins its v1 and v2 issuers and its published keys |
| `entra_audience` | the app registration's client id and/or application id URI (comma-separated) |
| `entra_app_roles` | `AppRole=target, ...`: an Airflow role (simple) or a FAB user name (fab) |
| `entra_issuers`, `entra_jwks_url` | instead of the tenant: explicit issuers and key sets |

No Airflow import here: the checks are plain PyJWT, tested without an API server.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt

SECTION = "azureml_bridge"
ENTRA_AUTHORITY = "https://login.microsoftonline.com"
# Only RS256: an unsigned token, or one signed with a shared secret, is refused whatever it says.
ALGORITHMS = ("RS256",)
REQUIRED_CLAIMS = ("exp", "iat", "nbf", "iss", "aud")
LEEWAY_SECONDS = 60
# Entra's keys are fetched at most this often when a token names a key id not seen yet, so that
# tokens with made-up key ids cannot make the API server fetch on every request.
REFETCH_SECONDS = 60.0
KEYS_LIFETIME_SECONDS = 24 * 3600.0
FETCH_TIMEOUT_SECONDS = 10.0


class KeysUnavailable(Exception):
    """Entra's published keys cannot be fetched: says nothing about the token (not a token
    error, so Airflow answers 500 and the bridge retries)."""


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class EntraTrust:
    """Whose tokens Airflow accepts, for what audience, and what each app role may do."""

    issuers: tuple[str, ...]
    audiences: tuple[str, ...]
    jwks_urls: tuple[str, ...]
    # App role value -> an Airflow role (simple auth manager) or a FAB user's name (FAB).
    app_roles: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_options(cls, option: Callable[[str], str]) -> EntraTrust:
        """From `[azureml_bridge]`'s options (`option(name)`, "" when unset); `ValueError` naming
        each option that is missing or malformed."""
        tenant = option("entra_tenant_id").strip()
        issuers = _split(option("entra_issuers"))
        jwks_urls = _split(option("entra_jwks_url"))
        if tenant:
            issuers = issuers or (f"{ENTRA_AUTHORITY}/{tenant}/v2.0",
                                  f"https://sts.windows.net/{tenant}/")  # fmt: skip
            jwks_urls = jwks_urls or (f"{ENTRA_AUTHORITY}/{tenant}/discovery/v2.0/keys",
                                      f"{ENTRA_AUTHORITY}/{tenant}/discovery/keys")  # fmt: skip
        problems = []
        if not issuers:
            problems.append("entra_tenant_id (or entra_issuers) is not set")
        if not jwks_urls:
            problems.append("entra_tenant_id (or entra_jwks_url) is not set")
        problems += [
            f"entra_jwks_url {url!r} is not an http(s) URL"
            for url in jwks_urls
            if not url.startswith(("https://", "http://"))
        ]
        audiences = _split(option("entra_audience"))
        if not audiences:
            problems.append("entra_audience is not set")
        roles: dict[str, str] = {}
        for pair in _split(option("entra_app_roles")):
            role, _, target = (part.strip() for part in pair.partition("="))
            if not (role and target):
                problems.append(f"entra_app_roles entry {pair!r} is not AppRole=target")
            roles[role] = target
        if not roles:
            problems.append("entra_app_roles is not set (AppRole=target, ...)")
        if problems:
            raise ValueError(f"[{SECTION}] " + "; ".join(problems))
        return cls(issuers, audiences, jwks_urls, roles)

    def check_audiences(self, airflows: Iterable[str]) -> None:
        """`ValueError` when an Entra audience is one Airflow's own tokens use (its execution
        API's, or its public API's): a token could then count for both."""
        shared = sorted(set(self.audiences) & {a.strip() for a in airflows if a and a.strip()})
        if shared:
            raise ValueError(
                f"[{SECTION}] entra_audience {shared} is also an audience of Airflow's own tokens "
                "([execution_api] or [api_auth] jwt_audience): use the Entra app's own id or URI"
            )

    def targets(self, claims: Mapping[str, Any]) -> list[str]:
        """What the token's app roles map to, in the order `entra_app_roles` lists them."""
        held = claims.get("roles")
        held = set(held) if isinstance(held, list) else set()
        return [target for role, target in self.app_roles.items() if role in held]


class EntraTokens:
    """Checks Entra ID access tokens against a trust; Entra's keys cached, fetched when a token
    names a key id not seen yet (at most every `REFETCH_SECONDS`) and once a day."""

    def __init__(
        self,
        trust: EntraTrust,
        *,
        fetch: Callable[[str], Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.trust = trust
        self._fetch = fetch or _fetch_json
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def is_entra(self, token: str) -> bool:
        """Whether the token claims to come from a pinned Entra issuer (unverified: only which
        check applies). Such a token is checked here, never handed to Airflow's own check."""
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.InvalidTokenError:
            return False
        return isinstance(issuer, str) and issuer in self.trust.issuers

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims; `jwt.ExpiredSignatureError` (expired) or another
        `jwt.InvalidTokenError` naming why it is refused; `KeysUnavailable`."""
        kid = self._kid(token)
        key = self._key(kid, refresh=self._needs_fetch(kid))
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=list(ALGORITHMS),
            audience=list(self.trust.audiences),
            issuer=list(self.trust.issuers),
            leeway=LEEWAY_SECONDS,
            options={"require": list(REQUIRED_CLAIMS)},
        )
        if not self.trust.targets(claims):
            raise jwt.InvalidTokenError(
                f"the token carries none of the app roles {sorted(self.trust.app_roles)} "
                f"(roles: {claims.get('roles', [])})"
            )
        return claims

    async def aclaims(self, token: str) -> dict[str, Any]:
        """`claims`, with a fetch of Entra's keys (when one is due) off the event loop."""
        kid = self._kid(token)
        if self._needs_fetch(kid):
            await asyncio.to_thread(self._key, kid, refresh=True)
        return self.claims(token)

    # -- keys -----------------------------------------------------------------------------------

    @staticmethod
    def _kid(token: str) -> str:
        header = jwt.get_unverified_header(token)
        if header.get("alg") not in ALGORITHMS:
            raise jwt.InvalidAlgorithmError(
                f"the token is signed with {header.get('alg')!r}; only {list(ALGORITHMS)}"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise jwt.InvalidTokenError("the token names no signing key ('kid' in its header)")
        return kid

    def _needs_fetch(self, kid: str) -> bool:
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at >= KEYS_LIFETIME_SECONDS:
            return True
        return kid not in self._keys and now - self._fetched_at >= REFETCH_SECONDS

    def _key(self, kid: str, *, refresh: bool) -> jwt.PyJWK:
        if refresh:
            with self._lock:
                if self._needs_fetch(kid):  # not fetched meanwhile by another request
                    self._keys = self._fetch_keys()
                    self._fetched_at = self._clock()
        key = self._keys.get(kid)
        if key is None:
            raise jwt.InvalidTokenError(f"the token is signed with an unknown key {kid!r}")
        return key

    def _fetch_keys(self) -> dict[str, jwt.PyJWK]:
        keys: dict[str, jwt.PyJWK] = {}
        for url in self.trust.jwks_urls:
            try:
                found = jwt.PyJWKSet.from_dict(dict(self._fetch(url)))
            except (OSError, ValueError, jwt.PyJWKSetError) as exc:
                raise KeysUnavailable(f"Entra ID's keys at {url} cannot be read: {exc}") from exc
            keys |= {key.key_id: key for key in found.keys if key.key_id}
        return keys


def _fetch_json(url: str) -> Mapping[str, Any]:
    """GET a JSON document over http(s) (`EntraTrust` checked the scheme); `OSError` or
    `ValueError` when it cannot be had."""
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.netloc, timeout=FETCH_TIMEOUT_SECONDS)
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        answer = connection.getresponse()
        body = answer.read()
    finally:
        connection.close()
    if answer.status != 200:
        raise OSError(f"HTTP {answer.status} from {url}")
    found: Mapping[str, Any] = json.loads(body)
    return found
