"""The signing key rotates itself: Key Vault's `SecretNearExpiry` event for the key's secret makes
a new version current; the one it replaces verifies on until it expires. The reconcile timer
checks the same every 10 minutes (`if_due`), so a notice Event Grid never delivers loses nothing.

Idempotent by the vault's state, not by the event: Event Grid may deliver an event twice, hand-made
deliveries may carry no version, and a version rotated already is no longer the current one. So a
rotation happens only when the event's version (if it names one) is the current version, and the
current version expires within the rotation window. A second event for the same version finds a
newer current version, and changes nothing. Each decision is one audit record on the trail of
`key-rotation.<secret>` (`bridge show key-rotation.<secret>`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge.audit import Audit, Decision, decide
from bridge.events import SECRET_NEAR_EXPIRY, SecretEvent
from bridge.ports import KeyVersion, SigningKeyStore
from bridge.signing import ROTATE_EVERY_DAYS

DAY = 86400.0
# A version is due when it expires within the window (Key Vault says so 30 days ahead) plus a day
# of slack for the event's own delay.
DUE_WITHIN_SECONDS = (ROTATE_EVERY_DAYS + 1) * DAY


def trail_of(secret: str) -> str:
    """The name the rotations of one secret are kept under in the audit trail."""
    return f"key-rotation.{secret}"


@dataclass(frozen=True)
class Rotated:
    """What one event did: `rotated` (from, to), or nothing and why."""

    rotated: bool
    detail: str
    new: KeyVersion | None = None


class KeyRotation:
    def __init__(
        self,
        store: SigningKeyStore,
        audit: Audit,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock

    def on_event(self, event: SecretEvent) -> Rotated:
        if event.name != self.store.secret:
            return Rotated(False, f"secret {event.name!r} is not the signing key's")
        if not event.near_expiry:
            return Rotated(False, f"{event.type}: instances read new versions within a minute")
        with self.audit.span("rotate", parent=None, job=trail_of(event.name)):
            return self._rotate(event, self.store.current())

    def if_due(self) -> Rotated:
        """The reconcile timer's check, whatever Event Grid delivered: rotate the current version
        if it is due (audited then); if not, nothing is recorded."""
        current = self.store.current()
        why = self._not_due(None, current, self.clock())
        if why is not None:
            return Rotated(False, why)
        event = SecretEvent("reconcile", SECRET_NEAR_EXPIRY, "", self.store.secret, None)
        with self.audit.span("rotate", parent=None, job=trail_of(self.store.secret)):
            return self._rotate(event, current)

    def _rotate(self, event: SecretEvent, current: KeyVersion) -> Rotated:
        now = self.clock()
        why = self._not_due(event.version, current, now)
        if why is not None:
            decide(Decision.DUPLICATE_SKIPPED, f"event {event.id}: {why}", event_id=event.id,
                   reason=why, kid=current.kid)  # fmt: skip
            return Rotated(False, why)
        new = self.store.rotate(current)
        detail = (
            f"key {current.kid} (version {current.version}) replaced by {new.kid} (version "
            f"{new.version}, expires in {_days(new.expires, now)})"
        )
        decide(Decision.ROTATED, f"event {event.id}: {detail}", event_id=event.id,
               replaced=current.kid, kid=new.kid, version=new.version)  # fmt: skip
        return Rotated(True, detail, new)

    @staticmethod
    def _not_due(version: str | None, current: KeyVersion, now: float) -> str | None:
        if version and version != current.version:
            return (
                f"version {version} is not the current one ({current.version}, key "
                f"{current.kid}): rotated already"
            )
        if current.expires is not None and current.expires - now > DUE_WITHIN_SECONDS:
            return (
                f"the current version {current.version} expires in {_days(current.expires, now)}: "
                "not due"
            )
        return None


def _days(expires: float | None, now: float) -> str:
    return "never" if expires is None else f"{(expires - now) / DAY:.1f} days"
