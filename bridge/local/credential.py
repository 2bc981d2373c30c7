"""A credential for the local Azure ML emulator only. The emulator checks that a bearer token is
sent, never what it says; azure-ai-ml itself decodes the token it sends with a pipeline job (without
checking its signature) and compares its audience with the workspace's resource id. So the token is
an unsigned JWT naming the scope's resource as audience, which no Azure service would accept."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from azure.core.credentials import AccessToken

from bridge.composition import credential_source, emulated
from bridge.settings import Settings

LOCAL_SUBJECT = "local-emulator-not-valid-in-azure"
_LIFETIME_SECONDS = 24 * 3600


class LocalCredential:
    """azure-core's `TokenCredential` protocol, answering an unsigned JWT for every scope."""

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        expires = int(time.time()) + _LIFETIME_SECONDS
        audience = scopes[0].removesuffix("/.default") if scopes else ""
        header = _segment({"alg": "none", "typ": "JWT"})
        payload = _segment({"aud": audience, "sub": LOCAL_SUBJECT, "exp": expires})
        return AccessToken(f"{header}.{payload}.", expires)


def _segment(claims: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()


@credential_source
def _for_the_emulator(settings: Settings) -> LocalCredential | None:
    """The local stack's own credential, for an Azure ML emulator on loopback only."""
    return LocalCredential() if emulated(settings) else None
