"""The trust from Airflow's own configuration, checked against Airflow's own audiences: shared by
the simple and the FAB auth managers, imported only inside Airflow."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import jwt
from airflow.configuration import conf

from bridge.provider.entra import SECTION, EntraTokens, EntraTrust


def entra_tokens() -> EntraTokens:
    """`ValueError` naming each missing or malformed option: the API server does not start."""
    trust = EntraTrust.from_options(lambda name: conf.get(SECTION, name, fallback="") or "")
    trust.check_audiences([
        *conf.get_mandatory_list_value("execution_api", "jwt_audience"),
        *(conf.get("api_auth", "jwt_audience", fallback="") or "").split(","),
    ])  # fmt: skip
    return EntraTokens(trust)


log = logging.getLogger(__name__)


async def entra_claims(tokens: EntraTokens, token: str) -> dict[str, Any]:
    """The token's verified claims; why it is refused, in the API server's log, and raised."""
    try:
        return await tokens.aclaims(token)
    except jwt.InvalidTokenError as exc:
        log.warning("Entra ID token refused: %s", exc)
        raise


def refused(reason: str) -> jwt.InvalidTokenError:
    """A refusal of the auth manager's own (after the token's checks), logged as `entra_claims`
    logs the others."""
    log.warning("Entra ID token refused: %s", reason)
    return jwt.InvalidTokenError(reason)


def client_of(claims: Mapping[str, Any]) -> str:
    """The calling app's client id: `azp` in v2 tokens, `appid` in v1 ones (else the subject)."""
    return str(claims.get("azp") or claims.get("appid") or claims.get("sub") or "unknown")
