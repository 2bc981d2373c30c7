"""Signing keys that rotate: a tag names its key; the current key and the previous one verify."""

from __future__ import annotations

import hashlib
import hmac
import secrets

import pytest

from bridge.errors import BlockedError, TransientError
from bridge.signing import (
    KID_LENGTH,
    UNKNOWN_KID_REREADS,
    Keyring,
    RotatingKeyring,
    key_id,
)

JOB = "train-0123456789abcdef0123-airflow"


def keys(count: int) -> list[str]:
    return [secrets.token_urlsafe(48) for _ in range(count)]


def test_a_tag_names_its_key_and_verifies_with_it() -> None:
    [key] = keys(1)
    tag = Keyring(key).sign(JOB)

    kid, mac = tag.split(":")
    assert kid == key_id(key) and len(mac) == 64
    assert Keyring(key).verify(JOB, tag)
    assert not Keyring(key).verify("other-job", tag)


def test_after_a_rotation_both_keys_verify_and_only_the_new_one_signs() -> None:
    old, new = keys(2)
    signed_before = Keyring(old).sign(JOB)
    rotated = Keyring(new, previous=old)

    assert rotated.verify(JOB, signed_before)
    assert rotated.sign(JOB).startswith(f"{key_id(new)}:")
    assert rotated.ids == [key_id(new), key_id(old)]


def test_two_rotations_later_the_oldest_key_no_longer_verifies() -> None:
    first, second, third = keys(3)
    signed_first = Keyring(first).sign(JOB)

    assert not Keyring(third, previous=second).verify(JOB, signed_first)


def test_a_tag_signed_before_key_ids_existed_verifies_with_either_key() -> None:
    old, new = keys(2)
    legacy = hmac.new(old.encode(), JOB.encode(), hashlib.sha256).hexdigest()

    assert Keyring(new, previous=old).verify(JOB, legacy)
    assert not Keyring(new).verify(JOB, legacy)


def test_a_tag_naming_one_key_is_not_checked_against_another() -> None:
    old, new = keys(2)
    mac = Keyring(old).sign(JOB).split(":")[1]

    assert not Keyring(new, previous=old).verify(JOB, f"{key_id(new)}:{mac}")


def test_the_key_id_reveals_nothing_of_the_key() -> None:
    [key] = keys(1)
    assert key_id(key) not in key and len(key_id(key)) == 8


class Store:
    """A store's answers in order: a keyring, or an error it raises."""

    def __init__(self, *answers: Keyring | Exception) -> None:
        self.answers = list(answers)
        self.reads = 0

    def __call__(self) -> Keyring:
        answer = self.answers[min(self.reads, len(self.answers) - 1)]
        self.reads += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_rotating_keyring_reads_the_store_again_once_its_ttl_is_over() -> None:
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    clock = [0.0]
    store = Store(Keyring(old), Keyring(new, old))
    keys = RotatingKeyring(store, ttl=60, clock=lambda: clock[0])
    assert keys.sign("job").startswith(key_id(old))
    clock[0] = 59
    assert keys.sign("job").startswith(key_id(old)) and store.reads == 1
    clock[0] = 60
    assert keys.sign("job").startswith(key_id(new)) and store.reads == 2


def test_a_tag_naming_an_unseen_key_reads_the_store_at_once_but_not_on_every_call() -> None:
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    clock = [100.0]
    store = Store(Keyring(old), Keyring(new, old))
    keys = RotatingKeyring(store, ttl=60, clock=lambda: clock[0])
    keys.ids  # noqa: B018 (the first read)
    signed_elsewhere = Keyring(new).sign("job")  # another instance rotated first
    assert keys.verify("job", signed_elsewhere)  # read again at once: no event refused
    assert store.reads == 2

    forged = f"{'0' * KID_LENGTH}:{'0' * 64}"
    assert not keys.verify("job", forged)
    assert not keys.verify("job", forged)  # the same unknown key id: not read again this minute
    assert store.reads == 3
    for n in range(3 * UNKNOWN_KID_REREADS):  # a flood of made-up key ids
        assert not keys.verify("job", f"{n + 1:0{KID_LENGTH}x}:{'0' * 64}")
    assert store.reads == 1 + UNKNOWN_KID_REREADS  # the first read, then one per lookup
    clock[0] += 60
    assert not keys.verify("job", forged)  # a minute on, it may be looked up once more
    assert store.reads == 1 + UNKNOWN_KID_REREADS + 2  # the TTL's read, and the lookup


def test_the_last_keys_serve_while_the_store_cannot_be_read_and_none_is_an_error() -> None:
    key = secrets.token_hex(32)
    clock = [0.0]
    store = Store(Keyring(key), TransientError("vault unreachable"))
    keys = RotatingKeyring(store, ttl=60, clock=lambda: clock[0])
    signed = keys.sign("job")
    clock[0] = 120
    assert keys.verify("job", signed)  # the store failed: the ring read before serves
    with pytest.raises(BlockedError, match="no version"):
        RotatingKeyring(Store(BlockedError("no version", cause=BlockedError.KEY_VAULT))).sign("j")


def test_older_versions_verify_and_never_sign() -> None:
    current, previous, oldest = (secrets.token_hex(32) for _ in range(3))
    ring = Keyring(current, previous, (oldest,))
    assert ring.verify("job", Keyring(oldest).sign("job"))
    assert ring.sign("job").startswith(key_id(current))
    assert ring.ids == [key_id(current), key_id(previous), key_id(oldest)]
