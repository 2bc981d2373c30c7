"""HMAC signatures that tie an Azure ML job to the bridge that submitted it, with keys that rotate.

The job carries `bridge_signature = <kid>:HMAC-SHA256(key, submission id)` as a tag, and run events
echo the job's tags: an event claiming to be about a bridge job whose signature does not verify is
ignored (and left to reconciliation, which reads Azure ML itself), so a forged webhook call cannot
fire effects for a job name it guessed.

Keys rotate without downtime: the bridge signs with its current key and verifies with the current
and the previous one, chosen by the key id the tag names. A key's id is derived from the key (the
first 8 hex digits of a SHA-256 over a fixed label and the key), so no setting can pair a key with
the wrong id. A tag without a key id (signed before ids existed) is tried against both keys.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from bridge.errors import BlockedError

KID_LENGTH = 8
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
        return [k for k in (self.current, self.previous) if k]


def sign(key: str, submission_id: str) -> str:
    """A signature by one key (the local stack and the chaos run sign as the bridge would)."""
    return Keyring(key).sign(submission_id)
