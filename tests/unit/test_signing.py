"""Signing keys that rotate: a tag names its key; the current key and the previous one verify."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from bridge.signing import Keyring, key_id

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
