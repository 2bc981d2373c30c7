"""Secure webhook delivery: the webhook (Function and dev host) takes only deliveries that carry an
Entra ID token for the configured audience and issuer, checked against published signing keys.

Entra cannot be reached from here, so its keys endpoint is a loopback server publishing an RSA key
made for the test (a JWKS document as Entra's), and the tokens are signed with it, shaped as
Event Grid's (v1 issuer, the app's id as audience). PyJWT fetches and checks exactly as in Azure.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

import function_app
from bridge.adapters.entra import EntraBearer
from bridge.composition import runtime, webhook_gate
from bridge.local.devhost import DevHost
from bridge.local.process import JsonHandler, LoopbackServer, free_port, loopback_http, serve
from bridge.local.stack import Stack
from bridge.service import Bridge
from bridge.webhook import answer

pytestmark = pytest.mark.integration

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ISSUER = f"https://sts.windows.net/{TENANT}/"
AUDIENCE = "api://bridge-events"
VALIDATION = json.dumps(
    [
        {
            "id": "v1",
            "topic": "t",
            "subject": "",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2026-11-26T00:00:00Z",
            "data": {"validationCode": "c0de"},
            "dataVersion": "1",
        }
    ]
).encode()


class Entra:
    """A signing key and the keys endpoint that publishes it."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(8)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        document = {"keys": [{**public, "kid": self.kid, "use": "sig"}]}

        class Keys(JsonHandler):
            def do_GET(self) -> None:
                self.send_json(200, document)

        self.server = serve(LoopbackServer(("127.0.0.1", 0), Keys))
        self.jwks_url = f"http://127.0.0.1:{self.server.server_address[1]}/discovery/v2.0/keys"

    def token(self, *, key: Any = None, kid: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"aud": AUDIENCE, "iss": ISSUER, "iat": now, "nbf": now, "exp": now + 3600,
                "appid": "4962773b-9cdb-44cf-a8bf-237846a00ab7", **claims}  # fmt: skip
        return jwt.encode(body, key or self.key, algorithm="RS256",
                          headers={"kid": kid or self.kid})  # fmt: skip


@pytest.fixture(scope="module")
def entra() -> Iterator[Entra]:
    keys = Entra()
    yield keys
    keys.server.shutdown()
    keys.server.server_close()


def no_bridge() -> Bridge:
    raise AssertionError("a handshake or a refused delivery must not build the bridge")


def deliver(gate: EntraBearer, authorization: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", "aeg-event-type": "SubscriptionValidation"}
    if authorization is not None:
        headers["Authorization"] = authorization
    reply = answer("POST", headers, VALIDATION, no_bridge, gate)
    return reply.status, dict(reply.body or {})


def test_a_valid_token_for_the_app_is_let_through(entra: Entra) -> None:
    gate = EntraBearer(AUDIENCE, ISSUER, entra.jwks_url)
    assert deliver(gate, f"Bearer {entra.token()}") == (200, {"validationResponse": "c0de"})


@pytest.mark.parametrize(
    ("authorization", "why"),
    [
        (None, "no bearer token"),
        ("Basic dXNlcjpwYXNz", "no bearer token"),
        ("Bearer ", "no bearer token"),
        ("Bearer not-a-jwt", "not a JWT"),
    ],
)
def test_a_delivery_without_a_token_is_a_401_naming_why(
    entra: Entra, authorization: str | None, why: str
) -> None:
    status, body = deliver(EntraBearer(AUDIENCE, ISSUER, entra.jwks_url), authorization)
    assert status == 401 and why in body["error"]


def test_tokens_for_another_app_issuer_time_or_key_are_refused(entra: Entra) -> None:
    gate = EntraBearer(AUDIENCE, ISSUER, entra.jwks_url)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    hour_ago = int(time.time()) - 3600
    cases = {
        "not for audience api://bridge-events": entra.token(aud="api://another-app"),
        f"not from issuer {ISSUER}": entra.token(iss="https://sts.windows.net/other-tenant/"),
        "expired": entra.token(exp=hour_ago, iat=hour_ago - 60, nbf=hour_ago - 60),
        "unknown key": entra.token(kid="not-published"),
        # A key Entra never published, under the published key's id: the signature fails.
        "invalid": entra.token(key=stranger),
        # Signed with HMAC over the published public key's id: only RS256 is accepted.
        "token is invalid": jwt.encode(
            {"aud": AUDIENCE, "iss": ISSUER, "exp": hour_ago + 7200},
            secrets.token_urlsafe(32),
            algorithm="HS256",
            headers={"kid": entra.kid},
        ),
    }
    for why, token in cases.items():
        status, body = deliver(gate, f"Bearer {token}")
        assert status == 401 and why in body["error"], (why, body)


def test_keys_that_cannot_be_fetched_are_a_503_which_event_grid_retries(entra: Entra) -> None:
    gate = EntraBearer(AUDIENCE, ISSUER, f"http://127.0.0.1:{free_port()}/keys")
    status, body = deliver(gate, f"Bearer {entra.token()}")
    assert status == 503 and "signing keys cannot be fetched" in body["error"]


def test_the_function_and_the_dev_host_enforce_it_from_settings(
    entra: Entra, loop_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dataclasses.replace(
        loop_stack.settings,
        webhook_audience=AUDIENCE,
        webhook_issuer=ISSUER,
        webhook_jwks_url=entra.jwks_url,
    )
    token = entra.token()
    # The Function's HTTP trigger, with the settings in its environment.
    for name, value in settings.environment().items():
        monkeypatch.setenv(name, value)
    webhook_gate.cache_clear()
    runtime.cache_clear()
    try:
        replies = {}
        for label, auth in (("without", {}), ("with", {"Authorization": f"Bearer {token}"})):
            request = func.HttpRequest(
                "POST", "/api/events", body=VALIDATION,
                headers={"Content-Type": "application/json", **auth},
            )  # fmt: skip
            response = function_app.events_webhook(request)
            replies[label] = response.status_code
        assert replies == {"without": 401, "with": 200}
    finally:
        webhook_gate.cache_clear()
        runtime.cache_clear()
    # The dev host, on the same settings.
    queue = f"entra{secrets.token_hex(3)}"  # a queue of its own: the stack's has its dev host
    loop_stack.servicebus.create_queue(queue)
    host = DevHost(lambda: loop_stack.bridge, settings,
                   servicebus_connection_string=loop_stack.servicebus.connection_string,
                   queue_name=queue)  # fmt: skip
    with host:
        headers = {"Content-Type": "application/json", "aeg-event-type": "SubscriptionValidation"}
        refused = loopback_http("POST", host.webhook_url, VALIDATION, headers)
        admitted = loopback_http("POST", host.webhook_url, VALIDATION,
                                 {**headers, "Authorization": f"Bearer {token}"})  # fmt: skip
    assert refused[0] == 401 and admitted[0] == 200
    assert json.loads(admitted[1]) == {"validationResponse": "c0de"}
