"""Airflow's FAB auth manager, taking the bridge's Entra ID token beside Airflow's own.

`[core] auth_manager = bridge.provider.entra.fab.EntraFabAuthManager`. A token from a pinned Entra
issuer acts as the FAB user its app role names (`entra_app_roles = AzureMLBridge=azureml-bridge`):
a service account with the bridge's least-privileged role (`infra/airflow/bridge-role.sh`) and no
password anyone knows. FAB checks that user's permissions, and that it is active, as for any other.
Any other token is Airflow's to check, as before.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager
from airflow.providers.fab.auth_manager.models import User
from airflow.utils.session import create_session
from sqlalchemy import select

from bridge.provider.entra import EntraTokens
from bridge.provider.entra.config import entra_claims, entra_tokens, refused


class EntraFabAuthManager(FabAuthManager):  # type: ignore[misc]
    def init(self) -> None:
        self._entra  # noqa: B018 (a wrong setting stops the API server now, not at the first call)
        super().init()

    @cached_property
    def _entra(self) -> EntraTokens:
        return entra_tokens()

    async def get_user_from_token(self, token: str) -> Any:
        if not self._entra.is_entra(token):
            return await super().get_user_from_token(token)
        claims = await entra_claims(self._entra, token)
        username = self._entra.trust.targets(claims)[0]
        with create_session() as session:
            user_id = session.scalars(select(User.id).where(User.username == username)).first()
        if user_id is None:
            raise refused(f"the FAB user {username!r} that entra_app_roles names does not exist")
        try:  # FAB's own lookup: the user must be active, and is cached as for Airflow's tokens
            return self.deserialize_user({"sub": str(user_id)})
        except ValueError as exc:
            raise refused(f"the FAB user {username!r}: {exc}") from exc
