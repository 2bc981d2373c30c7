"""HMAC signatures that tie an Azure ML job to the bridge that submitted it, with keys that rotate.

The job carries `bridge_signature = <kid>:HMAC-SHA256(key, submission id)` as a tag, and run events
echo the job's tags: an event claiming to be about a bridge job whose signature does not verify is
ignored (and left to reconciliation, which reads Azure ML itself), so a forged webhook call cannot
fire effects for a job name it guessed.

Keys rotate without downtime: the bridge signs with its current key and verifies with the current
and the previous one (and, from Key Vault, every older version not expired yet), chosen by the key
id the tag names. A key's id is derived from the key (the first 8 hex digits of a SHA-256 over a
fixed label and the key), so no setting can pair a key with the wrong id. A tag without a key id
(signed before ids existed) is tried against every key.

With the keys in Key Vault (`bridge.adapters.keyvault`), `RotatingKeyring` reads them again every
minute, and at once when a tag names a key this instance has not seen: another instance rotated.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from bridge.errors import BlockedError, TransientError

KID_LENGTH = 8
# A key signs for ROTATE_EVERY_DAYS and verifies until it expires, KEY_LIFETIME_DAYS after it was
# made: Key Vault announces SecretNearExpiry 30 days before a version's expiry, so a key that
# expired 30 days out would be "near expiry" as soon as it exists, and rotate in a loop.
ROTATE_EVERY_DAYS = 30
KEY_LIFETIME_DAYS = 60
# How long an instance signs and verifies with what it read from the store, at most.
KEYS_TTL_SECONDS = 60.0
# A tag naming a key id this instance has not seen makes it read the store again at once (another
# instance rotated), once per key id a TTL, and at most this many times a TTL for all key ids, so
# that made-up key ids cannot make every call a read of the store.
UNKNOWN_KID_REREADS = 12
log = logging.getLogger("bridge.signing")
# What App Service leaves in a setting whose Key Vault reference it could not resolve.
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("


def key_id(key: str) -> str:
    return hashlib.sha256(b"bridge-signing-key-id\x00" + key.encode()).hexdigest()[:KID_LENGTH]


def _mac(key: str, submission_id: str) -> str:
    return hmac.new(key.encode(), submission_id.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Keyring:
    """The current signing key, and the previous one while jobs it signed may still be running."""

    current: str = field(repr=False)
    previous: str | None = field(default=None, repr=False)
    # Older keys not expired yet (Key Vault's versions before the previous one): verify only.
    older: tuple[str, ...] = field(default=(), repr=False)

    def sign(self, submission_id: str) -> str:
        if self.current.startswith(KEY_VAULT_REFERENCE):
            # Signing with the reference's text would tag jobs no event of theirs could verify.
            raise BlockedError(
                "the signing key setting is a Key Vault reference the platform has not resolved",
                cause=BlockedError.KEY_VAULT,
            )
        return f"{key_id(self.current)}:{_mac(self.current, submission_id)}"

    def verify(self, submission_id: str, signature: str) -> bool:
        kid, _, mac = signature.rpartition(":")
        keys = self._keys
        if kid:
            keys = [k for k in keys if hmac.compare_digest(key_id(k), kid)]
        return any(hmac.compare_digest(_mac(k, submission_id), mac) for k in keys)

    @property
    def ids(self) -> list[str]:
        """The ids of the keys this ring verifies with, current first (for operators' logs)."""
        return [key_id(k) for k in self._keys]

    @property
    def _keys(self) -> list[str]:
        return [k for k in (self.current, self.previous, *self.older) if k]


class Keys(Protocol):
    """What the bridge signs and verifies with: a `Keyring`, or one read from a store."""

    def sign(self, submission_id: str) -> str: ...

    def verify(self, submission_id: str, signature: str) -> bool: ...

    @property
    def ids(self) -> list[str]: ...


def new_key() -> str:
    """A fresh signing key: 48 random bytes, URL-safe (64 characters)."""
    return secrets.token_urlsafe(48)


class RotatingKeyring:
    """The keys as a store holds them now, read again every `ttl` seconds, and at once when a tag
    names a key id not in the ring: another instance rotated and signed with the new key (once
    per key id a TTL, `UNKNOWN_KID_REREADS` times a TTL at most). While the store cannot be read,
    the last ring read goes on serving; with none read yet, the store's error is raised."""

    def __init__(
        self,
        read: Callable[[], Keyring],
        *,
        ttl: float = KEYS_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ttl = ttl
        self._clock = clock
        self._ring: Keyring | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()
        self._looked_up: dict[str, float] = {}  # unknown key id -> when the store was read for it

    def sign(self, submission_id: str) -> str:
        return self.ring().sign(submission_id)

    def verify(self, submission_id: str, signature: str) -> bool:
        ring = self.ring()
        if ring.verify(submission_id, signature):
            return True
        kid = signature.rpartition(":")[0]
        if kid and kid not in ring.ids and self._may_look_up(kid):
            return self.ring(reread=True).verify(submission_id, signature)
        return False

    def _may_look_up(self, kid: str) -> bool:
        with self._lock:
            now = self._clock()
            self._looked_up = {k: at for k, at in self._looked_up.items() if now - at < self._ttl}
            if kid in self._looked_up or len(self._looked_up) >= UNKNOWN_KID_REREADS:
                return False
            self._looked_up[kid] = now
            return True

    @property
    def ids(self) -> list[str]:
        return self.ring().ids

    def ring(self, *, reread: bool = False) -> Keyring:
        with self._lock:
            now = self._clock()
            if self._ring is None or reread or now - self._read_at >= self._ttl:
                try:
                    self._ring = self._read()
                except TransientError as exc:  # BlockedError included: both heal
                    if self._ring is None:
                        raise
                    log.warning("signing keys not read again, the last read serves: %s", exc)
                self._read_at = now
            return self._ring


def sign(key: str, submission_id: str) -> str:
    """A signature by one key (the local stack and the chaos run sign as the bridge would)."""
    return Keyring(key).sign(submission_id)
