"""The Airflow side's Entra ID check without an API server: its settings, its key cache, and a
token's claims (`bridge.provider.entra`). Tokens are real RS256 JWTs; only the fetch of the key
set is the test's (a function the class takes), so no request leaves the process."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.provider.entra import EntraTokens, EntraTrust, KeysUnavailable

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
AUDIENCE = "api://airflow"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def options(**values: str) -> EntraTrust:
    return EntraTrust.from_options(lambda name: values.get(name, ""))


def test_a_tenant_pins_both_issuers_and_both_key_sets() -> None:
    trust = options(entra_tenant_id=TENANT, entra_audience=f"{AUDIENCE}, 1234",
                    entra_app_roles="AzureMLBridge=op, Viewer = viewer")  # fmt: skip
    assert trust.issuers == (f"https://login.microsoftonline.com/{TENANT}/v2.0",
                             f"https://sts.windows.net/{TENANT}/")  # fmt: skip
    assert trust.jwks_urls == (
        f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys",
        f"https://login.microsoftonline.com/{TENANT}/discovery/keys",
    )
    assert trust.audiences == (AUDIENCE, "1234")
    assert dict(trust.app_roles) == {"AzureMLBridge": "op", "Viewer": "viewer"}


def test_missing_and_malformed_options_are_each_named() -> None:
    with pytest.raises(ValueError) as refused:
        options(entra_jwks_url="ftp://keys", entra_app_roles="AzureMLBridge")
    message = str(refused.value)
    for named in (
        "entra_tenant_id (or entra_issuers) is not set",
        "'ftp://keys'",
        "entra_audience is not set",
        "'AzureMLBridge' is not AppRole=target",
    ):
        assert named in message


def test_an_audience_of_airflows_own_tokens_is_refused() -> None:
    trust = options(entra_tenant_id=TENANT, entra_audience="urn:airflow.apache.org:task",
                    entra_app_roles="A=op")  # fmt: skip
    with pytest.raises(ValueError, match="also an audience of Airflow's own tokens"):
        trust.check_audiences(["urn:airflow.apache.org:task"])
    trust.check_audiences(["something-else", ""])  # no overlap: fine


class KeySet:
    """Entra's published keys, as a fetch function: counts its calls, can fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    def __call__(self, url: str) -> Mapping[str, Any]:
        self.calls += 1
        if self.down:
            raise OSError("connection refused")
        public = jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": "k1", "use": "sig"}]}


def token(kid: str = "k1", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": f"https://sts.windows.net/{TENANT}/", "aud": AUDIENCE, "iat": now,
            "nbf": now, "exp": now + 600, "roles": ["AzureMLBridge"], **claims}  # fmt: skip
    return jwt.encode(body, KEY, "RS256", {"kid": kid})


def checker(keys: KeySet, clock: list[float]) -> EntraTokens:
    trust = options(entra_tenant_id=TENANT, entra_audience=AUDIENCE,
                    entra_app_roles="AzureMLBridge=op")  # fmt: skip
    return EntraTokens(trust, fetch=keys, clock=lambda: clock[0])


def test_keys_are_fetched_once_and_unknown_kids_refetch_at_most_once_a_minute() -> None:
    keys, clock = KeySet(), [1000.0]
    tokens = checker(keys, clock)
    assert tokens.claims(token())["roles"] == ["AzureMLBridge"]
    assert tokens.claims(token())  # cached
    assert keys.calls == 2  # one fetch: both of the tenant's key sets

    for _ in range(5):  # made-up key ids cost one fetch a minute, not one a request
        with pytest.raises(jwt.InvalidTokenError, match="unknown key 'k9'"):
            tokens.claims(token(kid="k9"))
    assert keys.calls == 2
    clock[0] += 61
    with pytest.raises(jwt.InvalidTokenError, match="unknown key"):
        tokens.claims(token(kid="k9"))
    assert keys.calls == 4


def test_keys_that_cannot_be_fetched_are_not_the_tokens_fault() -> None:
    keys, clock = KeySet(), [1000.0]
    keys.down = True
    with pytest.raises(KeysUnavailable, match="connection refused"):
        checker(keys, clock).claims(token())


def test_is_entra_looks_only_at_the_pinned_issuers() -> None:
    tokens = checker(KeySet(), [1000.0])
    assert tokens.is_entra(token())
    assert not tokens.is_entra(token(iss="airflow"))
    assert not tokens.is_entra("not a jwt")


def test_an_algorithm_other_than_rs256_is_refused_before_any_key_is_fetched() -> None:
    keys = KeySet()
    hs = jwt.encode({"iss": f"https://sts.windows.net/{TENANT}/"}, "s" * 32, "HS256",
                    {"kid": "k1"})  # fmt: skip
    with pytest.raises(jwt.InvalidAlgorithmError, match="'HS256'"):
        checker(keys, [1000.0]).claims(hs)
    assert keys.calls == 0


def test_a_token_without_a_mapped_role_is_refused_naming_the_roles() -> None:
    with pytest.raises(jwt.InvalidTokenError, match=r"none of the app roles \['AzureMLBridge'\]"):
        checker(KeySet(), [1000.0]).claims(token(roles=["Reader"]))


@pytest.mark.parametrize("claim", ["iat", "nbf", "exp"])
def test_each_lifetime_claim_is_required(claim: str) -> None:
    now = int(time.time())
    body = {"iss": f"https://sts.windows.net/{TENANT}/", "aud": AUDIENCE, "iat": now,
            "nbf": now, "exp": now + 600, "roles": ["AzureMLBridge"]}  # fmt: skip
    del body[claim]
    with pytest.raises(jwt.MissingRequiredClaimError):
        checker(KeySet(), [1000.0]).claims(jwt.encode(body, KEY, "RS256", {"kid": "k1"}))
