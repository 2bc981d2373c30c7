"""A Key Vault on loopback: the secrets data plane `azure-keyvault-secrets` uses, and the vault's
Event Grid system topic.

What the SDK needs and Azure does, kept here:
- HTTPS only (the SDK refuses to send a bearer token over plain http), with a certificate of the
  local stack's own authority;
- challenge authentication: a request without a bearer token is answered 401 with
  `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
  resource="https://vault.azure.net"`, and the SDK sends it again with a token (the first one
  carries no body);
- versions: `PUT /secrets/{name}` makes a new one; `GET /secrets/{name}/` reads the newest,
  `GET /secrets/{name}/{version}` one of them, `GET /secrets/{name}/versions` lists their
  properties (no values) in pages with an absolute `nextLink`; `PATCH /secrets/{name}/{version}`
  changes attributes; a disabled version's value is refused (403, as Azure does);
- `api-version` is required; errors are `{"error": {"code", "message"}}`.

The topic publishes `Microsoft.KeyVault.SecretNewVersionCreated` for every new version, and
`near_expiry(name)` publishes `SecretNearExpiry` for the newest one, as Key Vault does 30 days
before a version's `exp` (data keys PascalCase and NBF/EXP as strings, as the REST spec's
example). Without a webhook URL the topic has no subscription, and nothing is delivered.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from bridge.local.certificate import LocalCertificate
from bridge.local.event_grid import EventGridTopic
from bridge.local.process import JsonHandler, Lifecycle, LoopbackServer, serve

API_VERSIONS = ("7.4", "7.5", "7.6", "2025-07-01", "2026-04-01")
PAGE_SIZE = 25
RESOURCE = "https://vault.azure.net"


@dataclass
class Version:
    value: str
    version: str
    created: int
    updated: int
    enabled: bool = True
    nbf: int | None = None
    exp: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None


class LocalKeyVault(Lifecycle):
    def __init__(
        self,
        folder: Path,
        *,
        name: str = "bridge-local-kv",
        event_key: str | None = None,
        webhook_url: str | None = None,
    ) -> None:
        self.name = name
        self.tenant = str(uuid.uuid4())
        self.certificate = LocalCertificate.create(folder / "tls")
        self.secrets: dict[str, list[Version]] = {}  # name -> versions, oldest first
        self.requests: list[tuple[str, str, bool]] = []  # method, path?query, with a bearer token
        self.topic = EventGridTopic(access_key=event_key or secrets.token_urlsafe(16),
                                    webhook_url=webhook_url)  # fmt: skip
        self.resource_id = (
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/bridge-local"
            f"/providers/Microsoft.KeyVault/vaults/{name}"
        )
        self._lock = threading.Lock()
        self._server: LoopbackServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the local Key Vault is not started"
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    # -- what tests and the stack do directly ---------------------------------------------------

    def set(self, name: str, value: str, *, exp: float | None = None,
            tags: dict[str, str] | None = None) -> Version:  # fmt: skip
        """A new version, as `PUT /secrets/{name}` makes one (and its event)."""
        now = int(time.time())
        made = Version(value, uuid.uuid4().hex, now, now, exp=int(exp) if exp else None,
                       tags=dict(tags or {}))  # fmt: skip
        with self._lock:
            self.secrets.setdefault(name, []).append(made)
        self._publish("Microsoft.KeyVault.SecretNewVersionCreated", name, made)
        return made

    def pass_days(self, name: str, days: float) -> Version:
        """Time passes for the newest version: made `days` earlier, and that much nearer its
        expiry (a rotation test cannot wait 30 days for Key Vault's notice to be due)."""
        seconds = int(days * 86400)
        with self._lock:
            newest = self.secrets[name][-1]
            newest.created -= seconds
            newest.updated -= seconds
            if newest.exp is not None:
                newest.exp -= seconds
        return newest

    def near_expiry(self, name: str) -> dict[str, Any]:
        """Key Vault's notice that the newest version expires within 30 days; the event sent."""
        with self._lock:
            newest = self.secrets[name][-1]
        return self._publish("Microsoft.KeyVault.SecretNearExpiry", name, newest)

    def versions(self, name: str) -> list[Version]:
        with self._lock:
            return list(self.secrets.get(name, []))

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        vault = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                vault._handle(self, "GET")

            def do_PUT(self) -> None:
                vault._handle(self, "PUT")

            def do_PATCH(self) -> None:
                vault._handle(self, "PATCH")

        server = LoopbackServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificate.certificate, self.certificate.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = serve(server)
        self.topic.start()
        return self

    def stop(self) -> None:
        self.topic.stop()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    # -- the data plane -------------------------------------------------------------------------

    def _handle(self, request: JsonHandler, method: str) -> None:
        url = urlsplit(request.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        bearer = (request.headers.get("Authorization") or "").startswith("Bearer ")
        self.requests.append((method, request.path, bearer))
        if not bearer:
            request.send_response(401)
            request.send_header("WWW-Authenticate", (
                f'Bearer authorization="https://login.microsoftonline.com/{self.tenant}", '
                f'resource="{RESOURCE}"'
            ))  # fmt: skip
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        if query.get("api-version") not in API_VERSIONS:
            request.send_json(400, _error("BadParameter", "api-version is missing or unknown"))
            return
        parts = [p for p in url.path.split("/") if p]
        if len(parts) < 2 or parts[0] != "secrets":
            request.send_json(404, _error("NotFound", f"no route {url.path}"))
            return
        status, answer = self._route(method, parts[1], parts[2:], query, body)
        request.send_json(status, answer)

    def _route(self, method: str, name: str, rest: list[str], query: dict[str, str],
               body: bytes) -> tuple[int, Any]:  # fmt: skip
        if method == "PUT" and not rest:
            return self._put(name, body)
        with self._lock:
            found = list(self.secrets.get(name, []))
        if not found:
            return 404, _error("SecretNotFound", f"A secret with (name/id) {name} was not found "
                               "in this key vault.")  # fmt: skip
        if method == "GET" and rest == ["versions"]:
            return 200, self._page(name, found, int(query.get("$skiptoken") or 0),
                                   int(query.get("maxresults") or PAGE_SIZE))  # fmt: skip
        if method in ("GET", "PATCH") and len(rest) <= 1:
            wanted = rest[0] if rest else ""
            version = found[-1] if not wanted else next(
                (v for v in found if v.version == wanted), None
            )  # fmt: skip
            if version is None:
                return 404, _error("SecretNotFound", f"A secret with (name/id) {name}/{wanted} "
                                   "was not found in this key vault.")  # fmt: skip
            if method == "PATCH":
                return 200, self._patch(name, version, body)
            if not version.enabled:
                return 403, _error("Forbidden", "Operation get is not allowed on a disabled "
                                   "secret.")  # fmt: skip
            return 200, self._bundle(name, version, value=True)
        return 405, _error("BadRequest", f"{method} is not supported here")

    def _put(self, name: str, body: bytes) -> tuple[int, Any]:
        try:
            sent = json.loads(body)
            value = sent["value"]
        except (ValueError, KeyError, TypeError):
            return 400, _error("BadParameter", "the body must be JSON with a 'value'")
        attributes = sent.get("attributes") or {}
        made = self.set(name, value, exp=attributes.get("exp"), tags=sent.get("tags"))
        with self._lock:
            made.content_type = sent.get("contentType")
            made.nbf = attributes.get("nbf")
            made.enabled = attributes.get("enabled", True)
        return 200, self._bundle(name, made, value=True)

    def _patch(self, name: str, version: Version, body: bytes) -> Any:
        sent = json.loads(body or b"{}")
        attributes = sent.get("attributes") or {}
        with self._lock:
            for key in ("enabled", "nbf", "exp"):
                if key in attributes:
                    setattr(version, key, attributes[key])
            if "tags" in sent:
                version.tags = dict(sent["tags"] or {})
            version.updated = int(time.time())
        return self._bundle(name, version, value=False)

    def _page(self, name: str, found: list[Version], skip: int, size: int) -> Any:
        page = found[skip : skip + size]
        more = skip + size < len(found)
        return {
            "value": [self._bundle(name, v, value=False) for v in page],
            "nextLink": (
                f"{self.url}/secrets/{name}/versions?api-version=7.6&$skiptoken={skip + size}"
                f"&maxresults={size}"
                if more
                else None
            ),
        }

    def _bundle(self, name: str, version: Version, *, value: bool) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "enabled": version.enabled, "created": version.created, "updated": version.updated,
            "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90,
        }  # fmt: skip
        attributes |= {k: getattr(version, k) for k in ("nbf", "exp") if getattr(version, k)}
        bundle: dict[str, Any] = {
            "id": f"{self.url}/secrets/{name}/{version.version}",
            "attributes": attributes,
            "tags": version.tags,
        }
        if version.content_type:
            bundle["contentType"] = version.content_type
        if value:
            bundle["value"] = version.value
        return bundle

    def _publish(self, event_type: str, name: str, version: Version) -> dict[str, Any]:
        data: dict[str, Any] = {
            "Id": f"https://{self.name}.vault.azure.net/secrets/{name}/{version.version}",
            "VaultName": self.name,
            "ObjectType": "Secret",
            "ObjectName": name,
            "Version": version.version,
        }
        data |= {key: str(value) for key, value in (("NBF", version.nbf), ("EXP", version.exp))
                 if value is not None}  # fmt: skip
        event = {
            "id": str(uuid.uuid4()),
            "topic": self.resource_id,
            "subject": name,
            "eventType": event_type,
            "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime()),
            "data": data,
            "dataVersion": "1",
            "metadataVersion": "1",
        }
        if self.topic.webhook_url:
            self.topic.publish(event)
        return event


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
