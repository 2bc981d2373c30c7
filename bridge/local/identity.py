"""Entra ID for the local stack, on loopback: the managed identity endpoint a Function App gets from
App Service, one tenant's published signing keys, and the app registration Airflow trusts.

- `GET /msi/token?api-version=2019-08-01&resource=...&client_id=...` with `X-IDENTITY-HEADER`:
  App Service's managed identity protocol, which azure-identity's `ManagedIdentityCredential`
  speaks when `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set (`environment()`). The bridge's
  production code gets its Airflow token here exactly as it does in Azure.
- `GET /{tenant}/discovery/v2.0/keys` (and v1's `/discovery/keys`): the keys Airflow's auth
  manager checks signatures with; `GET /{tenant}/v2.0/.well-known/openid-configuration`.

Tokens are RS256 JWTs shaped as Entra issues them for an app-only call (`roles`, `azp`/`appid`,
`oid`, `tid`, `iat`/`nbf`/`exp`, `kid`), v2 by default (`aud` = the app's client id, issuer
`.../v2.0`) or v1 (`aud` = the resource as asked, issuer `sts.windows.net`-shaped), as the app
registration's `requestedAccessTokenVersion` decides in Azure. The signing key is new on every
start and never leaves the process; `mint` signs any claims (the refusal tests' tokens).
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.local.process import JsonHandler, Lifecycle, LoopbackServer, serve

TOKEN_LIFETIME_SECONDS = 3600
MSI_API_VERSION = "2019-08-01"


@dataclass
class LocalApp:
    """An app registration: the API Airflow exposes to the bridge, with its app roles."""

    name: str
    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    token_version: int = 2  # the registration's api.requestedAccessTokenVersion

    @property
    def identifier_uri(self) -> str:
        return f"api://{self.name}"


@dataclass
class LocalPrincipal:
    """A managed identity: its client id, object id, and the app roles assigned to it."""

    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    roles: dict[str, list[str]] = field(default_factory=dict)  # app client id -> role values


class LocalIdentity(Lifecycle):
    def __init__(self, app: LocalApp, *principals: LocalPrincipal) -> None:
        self.tenant = str(uuid.uuid4())
        self.app = app
        # The identities the endpoint serves, by client id; the first is the default one.
        self.principals = {p.client_id: p for p in principals or (LocalPrincipal(),)}
        self.principal = next(iter(self.principals.values()))
        self.header_secret = secrets.token_urlsafe(16)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(8)
        self.requests: list[dict[str, str]] = []  # each token request's parameters
        self._server: LoopbackServer | None = None

    # -- what the other parts are told ----------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the local identity service is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def issuer(self, version: int | None = None) -> str:
        if (version or self.app.token_version) == 1:
            return f"{self.base_url}/sts/{self.tenant}/"
        return f"{self.base_url}/{self.tenant}/v2.0"

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/{self.tenant}/discovery/v2.0/keys"

    def environment(self, principal: LocalPrincipal | None = None) -> dict[str, str]:
        """What App Service sets for a Function App with a managed identity (and its client id,
        which the bridge's settings name)."""
        return {
            "IDENTITY_ENDPOINT": f"{self.base_url}/msi/token",
            "IDENTITY_HEADER": self.header_secret,
            "AZURE_CLIENT_ID": (principal or self.principal).client_id,
        }

    def airflow_options(self, app_roles: str) -> dict[str, str]:
        """The `[azureml_bridge]` options that make Airflow's auth manager trust this tenant."""
        return {
            "AIRFLOW__AZUREML_BRIDGE__ENTRA_ISSUERS": f"{self.issuer(2)},{self.issuer(1)}",
            "AIRFLOW__AZUREML_BRIDGE__ENTRA_JWKS_URL": self.jwks_url,
            "AIRFLOW__AZUREML_BRIDGE__ENTRA_AUDIENCE": (
                f"{self.app.client_id},{self.app.identifier_uri}"
            ),
            "AIRFLOW__AZUREML_BRIDGE__ENTRA_APP_ROLES": app_roles,
        }

    # -- tokens ---------------------------------------------------------------------------------

    def token_for(self, resource: str, principal: LocalPrincipal | None = None) -> str:
        """A managed identity's token for `resource`, as the endpoint would answer."""
        principal = principal or self.principal
        resource = resource.removesuffix("/.default")
        if resource not in (self.app.client_id, self.app.identifier_uri):
            raise LookupError(f"no app registration has the id or URI {resource!r}")
        version = self.app.token_version
        return self.mint({
            "aud": self.app.client_id if version == 2 else resource,
            "iss": self.issuer(version),
            "roles": principal.roles.get(self.app.client_id, []),
            "ver": f"{version}.0",
            "oid": principal.object_id,
            "sub": principal.object_id,
            ("azp" if version == 2 else "appid"): principal.client_id,
        })  # fmt: skip

    def mint(
        self,
        claims: dict[str, Any],
        *,
        lifetime: float = TOKEN_LIFETIME_SECONDS,
        key: Any = None,
        kid: str | None = None,
        algorithm: str = "RS256",
    ) -> str:
        """A token signed by this tenant's key (or `key`), with Entra's usual claims around
        `claims` (which win)."""
        now = int(time.time())
        body = {
            "iss": self.issuer(),
            "aud": self.app.client_id,
            "tid": self.tenant,
            "oid": self.principal.object_id,
            "sub": self.principal.object_id,
            "azp": self.principal.client_id,
            "idtyp": "app",
            "iat": now,
            "nbf": now,
            "exp": int(now + lifetime),
            **claims,
        }
        headers = {"kid": kid or self.kid, "typ": "JWT"}
        return jwt.encode(body, key if key is not None else self.key, algorithm, headers)

    def jwks(self) -> dict[str, Any]:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    # -- the server -----------------------------------------------------------------------------

    def start(self) -> Self:
        identity = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/msi/token":
                    status, body = identity._msi(self.headers.get("X-IDENTITY-HEADER"), url.query)
                    self.send_json(status, body)
                elif url.path in (f"/{identity.tenant}/discovery/v2.0/keys",
                                  f"/{identity.tenant}/discovery/keys"):  # fmt: skip
                    self.send_json(200, identity.jwks())
                elif url.path == f"/{identity.tenant}/v2.0/.well-known/openid-configuration":
                    self.send_json(200, {"issuer": identity.issuer(2),
                                         "jwks_uri": identity.jwks_url})  # fmt: skip
                else:
                    self.send_json(404, {"error": "not_found", "path": url.path})

        self._server = serve(LoopbackServer(("127.0.0.1", 0), Handler))
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _msi(self, header: str | None, query: str) -> tuple[int, dict[str, Any]]:
        """App Service's answer: the token, or its error shape (`statusCode`, `message`)."""
        params = {name: values[0] for name, values in parse_qs(query).items()}
        self.requests.append(params)
        if header is None or not secrets.compare_digest(header, self.header_secret):
            return 401, {"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong"}
        if params.get("api-version") != MSI_API_VERSION:
            return 400, {"statusCode": 400, "message": f"api-version {MSI_API_VERSION} expected"}
        principal = self.principals.get(params.get("client_id", self.principal.client_id))
        if principal is None:
            return 400, {"statusCode": 400, "message": "no managed identity has this client id"}
        try:
            token = self.token_for(params.get("resource", ""), principal)
        except LookupError as exc:
            return 500, {"statusCode": 500, "message": str(exc)}
        expires = int(jwt.decode(token, options={"verify_signature": False})["exp"])
        return 200, {
            "access_token": token,
            "expires_on": str(expires),
            "resource": params["resource"],
            "token_type": "Bearer",
            "client_id": principal.client_id,
        }
