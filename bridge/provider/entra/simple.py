"""Airflow's simple auth manager, taking the bridge's Entra ID token beside Airflow's own.

`[core] auth_manager = bridge.provider.entra.simple.EntraSimpleAuthManager`. A token from a pinned
Entra issuer acts as user `entra:<client id>` with the highest Airflow role its app roles map to
(`entra_app_roles = AzureMLBridge=op`); any other token is Airflow's to check, as before.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import (
    SimpleAuthManager,
    SimpleAuthManagerRole,
)
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

from bridge.provider.entra import EntraTokens
from bridge.provider.entra.config import client_of, entra_claims, entra_tokens


class EntraSimpleAuthManager(SimpleAuthManager):  # type: ignore[misc]
    def init(self) -> None:
        self._entra  # noqa: B018 (a wrong setting stops the API server now, not at the first call)
        super().init()

    @cached_property
    def _entra(self) -> EntraTokens:
        tokens = entra_tokens()
        roles = [name.lower() for name in SimpleAuthManagerRole.__members__]
        unknown = sorted(set(tokens.trust.app_roles.values()) - set(roles))
        if unknown:
            raise ValueError(
                f"[azureml_bridge] entra_app_roles maps to {unknown}, which are not roles of the "
                f"simple auth manager ({', '.join(roles)})"
            )
        return tokens

    async def get_user_from_token(self, token: str) -> Any:
        if not self._entra.is_entra(token):
            return await super().get_user_from_token(token)
        claims = await entra_claims(self._entra, token)
        role = max(self._entra.trust.targets(claims),
                   key=lambda name: SimpleAuthManagerRole[name.upper()].order)  # fmt: skip
        return SimpleAuthManagerUser(username=f"entra:{client_of(claims)}", role=role.lower())
