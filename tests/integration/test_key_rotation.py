"""The signing key rotates itself: a secret in Key Vault, read by `azure-keyvault-secrets` through
the bridge's adapter from the local Key Vault (HTTPS, challenge authentication, versions), rotated
on Key Vault's `SecretNearExpiry` event, idempotently and audited; and, on the whole local stack,
a rotation in the middle of a burst of completions refuses no event's signature and loses none.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import health
from bridge.adapters.keyvault import CONTENT_TYPE, KeyVaultSigningKey
from bridge.audit import Audit
from bridge.composition import build
from bridge.contracts import Submission
from bridge.errors import BlockedError
from bridge.events import SECRET_NEAR_EXPIRY, SECRET_NEW_VERSION, SecretEvent
from bridge.local.airflow import fresh_postgres_database
from bridge.local.credential import LocalCredential
from bridge.local.keyvault import LocalKeyVault
from bridge.local.stack import EXAMPLE_DAGS, Stack, StackOptions, running_stack
from bridge.rotation import KeyRotation, trail_of
from bridge.signing import KEY_LIFETIME_DAYS, ROTATE_EVERY_DAYS, Keyring, key_id, new_key
from tests.integration.conftest import LOOP_POLICY, eventually, job_tags, run_bridge, send
from tests.integration.test_loop import DONE, created, events_of, submission

pytestmark = pytest.mark.integration

SECRET = "signing-key"  # pragma: allowlist secret (a name)
DAY = 86400


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[LocalKeyVault]:
    with LocalKeyVault(tmp_path) as running:
        yield running


def store_of(vault: LocalKeyVault) -> KeyVaultSigningKey:
    return KeyVaultSigningKey(vault.url, SECRET, LocalCredential(),
                              ca_file=str(vault.certificate.authority))  # fmt: skip


def near_expiry(vault: LocalKeyVault, version: str | None, event_id: str = "e1") -> SecretEvent:
    return SecretEvent(event_id, SECRET_NEAR_EXPIRY, vault.name, SECRET, version)


def test_the_sdk_meets_a_challenge_first_then_reads_the_versions_over_https(
    vault: LocalKeyVault,
) -> None:
    first = vault.set(SECRET, new_key(), exp=time.time() + 30 * DAY)
    ring = store_of(vault).keyring()
    assert ring.ids == [key_id(first.value)]
    method, _, bearer = vault.requests[0]
    assert (method, bearer) == ("GET", False)  # challenge: no token before the vault names its
    assert all(bearer for _, _, bearer in vault.requests[1:])


def test_every_unexpired_enabled_version_verifies_across_pages_and_the_newest_signs(
    vault: LocalKeyVault,
) -> None:
    now = time.time()
    live = [vault.set(SECRET, new_key(), exp=now + DAY) for _ in range(30)]  # two pages
    expired = vault.set(SECRET, new_key(), exp=now - DAY)
    disabled = vault.set(SECRET, new_key(), exp=now + DAY)
    disabled.enabled = False
    newest = vault.set(SECRET, new_key(), exp=now + DAY)

    ring = store_of(vault).keyring()

    assert ring.sign("job").startswith(key_id(newest.value))
    assert set(ring.ids) == {key_id(v.value) for v in [*live, newest]}
    assert key_id(expired.value) not in ring.ids and key_id(disabled.value) not in ring.ids
    # The SDK followed the vault's nextLink to the second page.
    assert any("/versions?" in path and "$skiptoken=25" in path for _, path, _ in vault.requests)


def test_no_usable_version_blocks_naming_the_vault_and_secret(vault: LocalKeyVault) -> None:
    vault.set(SECRET, new_key(), exp=time.time() - DAY)
    with pytest.raises(BlockedError, match="no enabled, unexpired version") as refused:
        store_of(vault).keyring()
    assert refused.value.cause == BlockedError.KEY_VAULT
    with pytest.raises(BlockedError, match="no such secret"):
        KeyVaultSigningKey(vault.url, "absent", LocalCredential(),
                           ca_file=str(vault.certificate.authority)).current()  # fmt: skip


def test_near_expiry_rotates_once_and_a_second_event_changes_nothing(vault: LocalKeyVault) -> None:
    old = vault.set(SECRET, new_key(), exp=time.time() + ROTATE_EVERY_DAYS * DAY)
    store = store_of(vault)
    kept: list[tuple[str, list[dict[str, object]]]] = []
    rotation = KeyRotation(store, Audit(keep=lambda job, entries: kept.append((job, entries))))

    done = rotation.on_event(near_expiry(vault, old.version))

    assert done.rotated and done.new is not None
    new = vault.versions(SECRET)[-1]
    assert len(vault.versions(SECRET)) == 2
    assert new.tags == {"kid": key_id(new.value), "replaces": old.version,
                        "replaces-kid": key_id(old.value)}  # fmt: skip
    assert new.content_type == CONTENT_TYPE
    assert new.exp is not None and abs(new.exp - (time.time() + KEY_LIFETIME_DAYS * DAY)) < 60
    # Both keys verify; the new one signs.
    ring = store.keyring()
    assert ring.sign("job").startswith(key_id(new.value))
    assert ring.verify("job", Keyring(old.value).sign("job"))

    # The same event again, a delivery without a version, an expired notice: nothing changes.
    for again in (near_expiry(vault, old.version, "e1"), near_expiry(vault, None, "e2"),
                  SecretEvent("e3", "Microsoft.KeyVault.SecretExpired", vault.name, SECRET,
                              old.version)):  # fmt: skip
        assert not rotation.on_event(again).rotated
    assert len(vault.versions(SECRET)) == 2
    # Audited: one record each, under the secret's trail.
    decisions = [e["decision"] for job, entries in kept for e in entries
                 if e.get("record") == "decision"]  # fmt: skip
    assert {job for job, _ in kept} == {trail_of(SECRET)}
    assert decisions == ["rotated", "duplicate-skipped", "duplicate-skipped", "duplicate-skipped"]


def test_other_secrets_and_new_versions_rotate_nothing(vault: LocalKeyVault) -> None:
    vault.set(SECRET, new_key(), exp=time.time() + DAY)
    rotation = KeyRotation(store_of(vault), Audit())
    other = SecretEvent("e1", SECRET_NEAR_EXPIRY, vault.name, "airflow-password", None)
    created_event = SecretEvent("e2", SECRET_NEW_VERSION, vault.name, SECRET, None)
    assert "not the signing key's" in rotation.on_event(other).detail
    assert not rotation.on_event(created_event).rotated
    assert len(vault.versions(SECRET)) == 1


# -- the whole stack ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack with its signing key in the local Key Vault. Reconciliation waits an hour: every
    outcome below must come from its event, verified, or not at all."""
    root = tmp_path_factory.mktemp("keyvault")
    dags = root / "dags"
    dags.mkdir()
    for source in [*EXAMPLE_DAGS.glob("*.py"), *(Path(__file__).parent / "loop_dags").glob("*.py")]:
        shutil.copy(source, dags / source.name)
    (root / "jobs").symlink_to(EXAMPLE_DAGS.parent / "jobs")
    options = StackOptions(workdir=root / "stack", dags_folder=dags, policy_json=LOOP_POLICY,
                           database_url=fresh_postgres_database("bridge_keyvault"),
                           reconcile_after_seconds=3600.0, key_vault=True)  # fmt: skip
    with running_stack(options) as stack:
        assert stack.airflow is not None
        stack.airflow.wait_for_dags(["loop_assets", "loop_triggered"], timeout=90)
        yield stack


def burst(stack: Stack, count: int) -> list[Submission]:
    jobs = [submission(command="sleep 3") for _ in range(count)]
    send(stack, *jobs)
    for job in jobs:
        created(stack, job)
    return jobs


def test_a_rotation_during_a_burst_refuses_no_signature_and_loses_nothing(
    vault_stack: Stack,
) -> None:
    stack, vault = vault_stack, vault_stack.key_vault
    assert vault is not None and not stack.settings.signing_key
    [first] = vault.versions(SECRET)
    other_instance = build(stack.settings)  # another instance: its keys read now, cached a minute
    before = other_instance.keys.ids

    signed_before = burst(stack, 12)
    vault.pass_days(SECRET, ROTATE_EVERY_DAYS)  # 30 days on: Key Vault says it nears its expiry
    delivered = vault.near_expiry(SECRET)  # through the vault's topic to the bridge's webhook
    eventually(lambda: len(vault.versions(SECRET)) == 2 or None, timeout=30,
               what="the near-expiry event rotated the key")  # fmt: skip
    vault.near_expiry(SECRET)  # again, for the new version: not due, nothing changes
    vault.topic.publish(dict(delivered))  # the first notice, delivered twice
    signed_after = burst(stack, 12)

    new = vault.versions(SECRET)[-1]
    for job in signed_before:
        assert job_tags(stack, job.id)["bridge_signature"].startswith(key_id(first.value))
    for job in signed_after:
        assert job_tags(stack, job.id)["bridge_signature"].startswith(key_id(new.value))
    # The other instance never saw the new key, and verifies its tags all the same.
    assert key_id(new.value) not in before
    tag = job_tags(stack, signed_after[0].id)["bridge_signature"]
    assert other_instance.keys.verify(signed_after[0].id, tag)

    for job in [*signed_before, *signed_after]:
        eventually(lambda job=job: events_of(stack, DONE, job.id), timeout=90,
                   what=f"{job.id} routed by its event")  # fmt: skip
    for job in [*signed_before, *signed_after]:
        [routed] = events_of(stack, DONE, job.id)
        assert routed.extra["via"] == "event"  # verified: reconciliation waits an hour
    time.sleep(2)  # the duplicate notices were delivered and judged
    assert len(vault.versions(SECRET)) == 2
    assert all(d.outcome == "delivered" for d in vault.topic.deliveries)


def test_the_reconcile_check_rotates_a_due_key_without_any_event(vault: LocalKeyVault) -> None:
    """Event Grid delivered nothing: the timer's check finds the key due and rotates it, and
    records nothing while it is not due."""
    due = vault.set(SECRET, new_key(), exp=time.time() + 10 * DAY)
    kept: list[str] = []
    rotation = KeyRotation(store_of(vault), Audit(keep=lambda job, entries: kept.append(job)))

    assert rotation.if_due().rotated
    assert vault.versions(SECRET)[-1].tags["replaces"] == due.version
    assert not rotation.if_due().rotated  # the new version is not due
    assert len(vault.versions(SECRET)) == 2
    assert kept == [trail_of(SECRET)]  # one audited rotation, no record of the check after it


def test_health_tells_the_keys_id_age_and_expiry_never_the_key(vault_stack: Stack) -> None:
    vault = vault_stack.key_vault
    assert vault is not None
    credentials: dict[str, Any] = {}
    found = health.problems(vault_stack.settings, {}, freshness=credentials)
    assert found == []
    newest = vault.versions(SECRET)[-1]
    signing = credentials["signing_key"]
    assert signing["source"] == "key vault" and signing["kid"] == key_id(newest.value)
    assert signing["age_seconds"] >= 0 and 0 < signing["expires_in_seconds"] <= 60 * DAY
    assert all(v.value not in json.dumps(credentials) for v in vault.versions(SECRET))


def test_bridge_show_and_health_read_the_rotations_trail_and_the_keys_freshness(
    vault_stack: Stack,
) -> None:
    """What an operator runs: `bridge show key-rotation.signing-key` (the rotation recorded by the
    burst test's notice) and `bridge health`, from the stack's settings."""
    vault = vault_stack.key_vault
    assert vault is not None
    if len(vault.versions(SECRET)) < 2:  # run alone: rotate here
        vault.pass_days(SECRET, ROTATE_EVERY_DAYS)
        vault.near_expiry(SECRET)
        eventually(lambda: len(vault.versions(SECRET)) >= 2 or None, timeout=30,
                   what="the near-expiry event rotated the key")  # fmt: skip
    shown = run_bridge(vault_stack.settings, "show", trail_of(SECRET), "--json")
    assert shown.returncode == 0, shown.stderr
    decisions = [e.get("decision") for e in json.loads(shown.stdout)]
    assert "rotated" in decisions

    checked = run_bridge(vault_stack.settings, "health")
    answer = json.loads(checked.stdout)
    assert answer["credentials"]["signing_key"]["kid"] == key_id(vault.versions(SECRET)[-1].value)
