"""The signing key in Key Vault (`azure-keyvault-secrets`): the `bridge.ports.SigningKeyStore`.

The key is one secret with versions. The newest enabled version that has begun (`nbf`) signs;
every enabled version not expired verifies, so jobs signed before a rotation verify until their
key expires (`KEY_LIFETIME_DAYS` after it was made, at least `KEY_LIFETIME_DAYS -
ROTATE_EVERY_DAYS` after it stopped signing). A version's value never changes, so each is read
once per process; the list of versions is read again whenever the keyring is (every minute).

Failures: the identity refused (401/403: a role missing or propagating) or the secret absent
block and heal; an unreachable vault or a 5xx/429 is transient.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from bridge import audit
from bridge.errors import BlockedError, TransientError, first_line
from bridge.ports import KeyVersion
from bridge.signing import KEY_LIFETIME_DAYS, Keyring, key_id, new_key

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.keyvault.secrets import SecretClient, SecretProperties

CONTENT_TYPE = "application/vnd.azureml-bridge.signing-key"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class KeyVaultSigningKey:
    def __init__(
        self,
        vault_url: str,
        secret: str,
        credential: TokenCredential,
        *,
        identity: str = "managed identity",
        ca_file: str | None = None,
    ) -> None:
        from azure.keyvault.secrets import SecretClient

        self.vault_url = vault_url.rstrip("/")
        self.secret = secret
        self.identity = identity
        loopback = urlparse(vault_url).hostname in _LOOPBACK
        options: dict[str, Any] = {"connection_verify": ca_file} if ca_file else {}
        # A vault on loopback is the local emulator: its challenge names Key Vault's resource
        # (https://vault.azure.net), which a loopback address is not a subdomain of.
        self.client: SecretClient = SecretClient(
            self.vault_url, credential, verify_challenge_resource=not loopback, **options
        )
        self._values: dict[str, str] = {}  # version -> value: a version never changes
        self._lock = threading.Lock()

    # -- the port -------------------------------------------------------------------------------

    def keyring(self) -> Keyring:
        now = datetime.now(UTC)
        usable = sorted(
            (p for p in self._versions() if p.enabled and _live(p, now) and p.version),
            key=lambda p: p.created_on or now,
            reverse=True,
        )
        signing = [p for p in usable if p.not_before is None or p.not_before <= now]
        # The vault's own newest version signs when it may: `created` has whole seconds only, so
        # two versions of one second would otherwise tie.
        try:
            newest: str | None = self.current().version
        except BlockedError:  # the newest version is disabled: the list alone decides
            newest = None
        signing.sort(key=lambda p: p.version != newest)
        if not signing:
            raise BlockedError(
                f"Key Vault {self.vault_url} has no enabled, unexpired version of the secret "
                f"{self.secret!r} to sign with: set one (docs/security.md, the signing key)",
                cause=BlockedError.KEY_VAULT,
            )
        current = signing[0]
        others = [self._value(p) for p in usable if p.version != current.version]
        return Keyring(self._value(current), others[0] if others else None, tuple(others[1:]))

    def current(self) -> KeyVersion:
        with self._calling("get_secret", self.secret):
            found = self.client.get_secret(self.secret)
        assert found.properties.version and found.value is not None
        self._values[found.properties.version] = found.value
        return _version(found.properties, found.value)

    def rotate(self, replaces: KeyVersion) -> KeyVersion:
        value = new_key()
        expires = datetime.now(UTC) + timedelta(days=KEY_LIFETIME_DAYS)
        with self._calling("set_secret", self.secret):
            made = self.client.set_secret(
                self.secret, value, content_type=CONTENT_TYPE, expires_on=expires,
                tags={"kid": key_id(value), "replaces": replaces.version,
                      "replaces-kid": replaces.kid},
            )  # fmt: skip
        assert made.properties.version
        self._values[made.properties.version] = value
        return _version(made.properties, value)

    def freshness(self) -> dict[str, Any]:
        """The current version's key id, age and expiry: never the key."""
        current = self.current()
        now = datetime.now(UTC).timestamp()
        return {
            "kid": current.kid,
            "age_seconds": round(now - current.created),
            "expires_in_seconds": None if current.expires is None else round(current.expires - now),
        }

    # -- reads ----------------------------------------------------------------------------------

    def _versions(self) -> list[SecretProperties]:
        with self._calling("list_properties_of_secret_versions", self.secret):
            return list(self.client.list_properties_of_secret_versions(self.secret))

    def _value(self, properties: SecretProperties) -> str:
        version = properties.version
        assert version
        with self._lock:
            known = self._values.get(version)
        if known is not None:
            return known
        with self._calling("get_secret", f"{self.secret}/{version}"):
            value = self.client.get_secret(self.secret, version).value
        if value is None:
            raise BlockedError(f"version {version} of {self.secret!r} has no value",
                               cause=BlockedError.KEY_VAULT)  # fmt: skip
        with self._lock:
            self._values[version] = value
        return value

    @contextmanager
    def _calling(self, operation: str, target: str) -> Iterator[None]:
        """One Key Vault call: its audit record, and its failure as a bridge error."""
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        where = f"Key Vault {self.vault_url}: {operation}({target})"
        with audit.call("keyvault", operation, target, self.identity):
            try:
                yield
            except ResourceNotFoundError as exc:
                raise BlockedError(f"{where}: no such secret",
                                   cause=BlockedError.KEY_VAULT) from exc  # fmt: skip
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise TransientError(f"{where}: {first_line(exc)}") from exc
            except (ClientAuthenticationError, HttpResponseError) as exc:
                status = getattr(exc, "status_code", None) or 0
                if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
                    raise BlockedError(
                        f"{where}: the {self.identity} is refused ({first_line(exc)}): it needs "
                        "Key Vault Secrets Officer on the secret (or the assignment is "
                        "propagating)",
                        cause=BlockedError.PERMISSION,
                    ) from exc
                if status == 429 or status >= 500:
                    raise TransientError(f"{where}: {first_line(exc)}") from exc
                raise


def _live(properties: SecretProperties, now: datetime) -> bool:
    return properties.expires_on is None or properties.expires_on > now


def _version(properties: SecretProperties, value: str) -> KeyVersion:
    assert properties.version
    created = properties.created_on or datetime.now(UTC)
    expires = properties.expires_on
    return KeyVersion(
        properties.version,
        key_id(value),
        created.timestamp(),
        expires.timestamp() if expires is not None else None,
    )
