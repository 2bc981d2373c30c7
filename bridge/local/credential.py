"""A credential for the local Azure ML emulator only: the emulator checks that a bearer token is
sent, never what it says, so the token is a constant that no Azure service would accept."""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken

LOCAL_TOKEN = "local-emulator-token-not-valid-in-azure"
_LIFETIME_SECONDS = 24 * 3600


class LocalCredential:
    """azure-core's `TokenCredential` protocol, answering the same fake token for every scope."""

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(LOCAL_TOKEN, int(time.time()) + _LIFETIME_SECONDS)
