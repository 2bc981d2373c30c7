"""Airflow outside Azure, without a secret: the operator's credential is chosen from the
environment, and with `AZURE_FEDERATED_TOKEN_FILE` it exchanges the workers' own OIDC token for an
Entra ID token (workload identity federation).

Entra ID cannot be reached from here, so its token service is a loopback HTTPS server with a
certificate of the local stack's own authority (trusted through `REQUESTS_CA_BUNDLE`), named by
`AZURE_AUTHORITY_HOST` as a private cloud's would be. azure-identity and MSAL run unchanged: the
request checked is the one they really send.
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.identity import DefaultAzureCredential, WorkloadIdentityCredential

from bridge.errors import ConfigurationError
from bridge.local.certificate import LocalCertificate
from bridge.local.process import JsonHandler, LoopbackServer, serve
from bridge.provider.senders import SERVICE_BUS_SCOPE, ServiceBusSender, worker_credential

pytestmark = pytest.mark.integration

TENANT = "9c2f3c5e-3f1e-4a7b-8a0e-6d1f2a3b4c5d"
CLIENT = "0b7d3f8a-1c2e-4f5a-9b6c-7d8e9f0a1b2c"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class TokenService:
    """Entra ID's OpenID configuration and token endpoint for one tenant, over HTTPS."""

    def __init__(self, folder: Path) -> None:
        self.requests: list[dict[str, str]] = []
        self.certificate = LocalCertificate.create(folder)
        seen = self.requests

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                base = f"https://127.0.0.1:{self.server.server_address[1]}/{TENANT}"
                if self.path.startswith(f"/{TENANT}/v2.0/.well-known/openid-configuration"):
                    self.send_json(200, {
                        "issuer": f"{base}/v2.0",
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "token_endpoint": f"{base}/oauth2/v2.0/token",
                    })  # fmt: skip
                else:
                    self.send_json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                seen.append({"path": self.path, **form})
                token = "entra-access-token-for-service-bus"
                self.send_json(200, {"token_type": "Bearer", "expires_in": 3600,
                                     "access_token": token})  # fmt: skip

        self.server = LoopbackServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificate.certificate, self.certificate.key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.authority = f"https://127.0.0.1:{self.server.server_address[1]}"
        serve(self.server)


@pytest.fixture
def entra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenService]:
    service = TokenService(tmp_path / "tls")
    # azure-identity's transport is requests, which trusts this bundle (as a proxy's CA would be).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(service.certificate.authority))
    yield service
    service.server.shutdown()
    service.server.server_close()


def test_a_federated_token_file_is_exchanged_for_a_service_bus_token(
    entra: TokenService, tmp_path: Path
) -> None:
    oidc_token = tmp_path / "oidc-token"
    oidc_token.write_text("the-workers-own-oidc-token")
    env = {"AZURE_CLIENT_ID": CLIENT, "AZURE_TENANT_ID": TENANT,
           "AZURE_FEDERATED_TOKEN_FILE": str(oidc_token),
           "AZURE_AUTHORITY_HOST": entra.authority}  # fmt: skip

    credential, identity = worker_credential(env)

    assert isinstance(credential, WorkloadIdentityCredential)
    assert identity == (
        f"workload identity federation (client id {CLIENT}, tenant {TENANT}, "
        f"token file {oidc_token})"
    )
    token = credential.get_token(SERVICE_BUS_SCOPE)
    assert token.token == "entra-access-token-for-service-bus"
    [request] = entra.requests
    assert request["path"] == f"/{TENANT}/oauth2/v2.0/token"
    assert request["client_assertion"] == "the-workers-own-oidc-token"
    assert request["client_assertion_type"] == ASSERTION_TYPE
    assert request["client_id"] == CLIENT and "client_secret" not in request
    assert SERVICE_BUS_SCOPE in request["scope"]
    # The operator's early check passes with it (no Service Bus needed: nothing is sent).
    sender = ServiceBusSender("bridge.servicebus.windows.net", credential=credential,
                              identity=identity)  # fmt: skip
    try:
        sender._check_token()
    finally:
        sender.close()


def test_without_a_token_file_the_workers_use_their_managed_identity() -> None:
    credential, identity = worker_credential({"AZURE_CLIENT_ID": CLIENT})
    assert isinstance(credential, DefaultAzureCredential)
    assert identity == f"the managed identity with client id {CLIENT}"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/missing-token"}, "AZURE_CLIENT_ID"),
        ({"AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/missing-token",
          "AZURE_CLIENT_ID": CLIENT, "AZURE_TENANT_ID": TENANT}, "which is not a file"),
    ],
)
def test_an_incomplete_federation_fails_before_anything_is_sent(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        worker_credential(env)
