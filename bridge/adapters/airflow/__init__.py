"""Airflow through its v2 REST API (`apache-airflow-client`): the `bridge.ports.Airflow` adapter.

One concern a module: `session` (the client, its token, each call and its audit record),
`failures` (Airflow's answers as bridge errors), `assets` (asset ids by URI, cached), `posted`
(whether an effect's event exists, around apache/airflow#71360). `AirflowRest` puts them
together; one instance per process, reused for every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bridge.adapters.airflow.assets import AssetIds
from bridge.adapters.airflow.posted import PostedCheck
from bridge.adapters.airflow.session import POOL_SIZE, EntraAccess, Session
from bridge.errors import BlockedError, PermanentError

if TYPE_CHECKING:
    from airflow_client.client import ApiClient

__all__ = ["POOL_SIZE", "AirflowRest", "EntraAccess"]


class AirflowRest:
    """The bridge's effects on one Airflow deployment: asset events and DAG runs."""

    def __init__(
        self,
        base_url: str,
        username: str = "",
        password: str = "",
        *,
        token: str | None = None,
        entra: EntraAccess | None = None,
        timeout: float = 10.0,
        page_size: int = 100,
    ) -> None:
        """Signs in as `username` (a token from `POST /auth/token`, renewed before it expires);
        or, with `token`, uses that API token as it is (from Key Vault; never renewed here); or,
        with `entra`, sends the managed identity's Entra ID token (no secret at all)."""
        self.session = Session(
            base_url, username, password, token=token, entra=entra, timeout=timeout
        )
        self.asset_id = AssetIds(self.session, page_size)
        self._posted = PostedCheck(self.session, self.asset_id)

    @property
    def base_url(self) -> str:
        return self.session.base_url

    @property
    def identity(self) -> str:
        """What the audit trail names: the user, or that a static token is used."""
        return self.session.identity

    # -- the port -------------------------------------------------------------------------------

    def post_asset_event(
        self, uri: str, extra: Mapping[str, Any], partition_key: str | None = None
    ) -> None:
        from airflow_client.client import AssetApi, CreateAssetEventsBody
        from airflow_client.client.exceptions import NotFoundException

        session = self.session
        body = CreateAssetEventsBody(
            asset_id=self.asset_id(uri), extra=dict(extra), partition_key=partition_key
        )
        try:
            session.call(
                "create_asset_event",
                uri,
                lambda: AssetApi(session.client).create_asset_event_with_http_info(
                    body, _request_timeout=session.timeout
                ),
                writes=True,
            )
        except BlockedError as exc:
            if isinstance(exc.__cause__, NotFoundException):
                self.asset_id.forget(uri)
            raise

    def asset_event_posted(self, uri: str, effect_id: str, since: float) -> bool:
        return self._posted(uri, effect_id, since)

    def events_on(self, uri: str) -> list[dict[str, Any]]:
        """The `extra` of every event on an asset, oldest first (operators and the chaos count)."""
        return self._posted.all_on(uri)

    def has_asset(self, uri: str) -> bool:
        try:
            self.asset_id(uri)
        except BlockedError as exc:
            if exc.cause == BlockedError.MISSING_ASSET:
                return False
            raise
        return True

    def trigger_dag_run(self, dag_id: str, run_id: str, conf: Mapping[str, Any]) -> bool:
        from airflow_client.client import DagRunApi, TriggerDAGRunPostBody
        from airflow_client.client.exceptions import ConflictException

        session = self.session
        body = TriggerDAGRunPostBody(dag_run_id=run_id, conf=dict(conf), logical_date=None)
        try:
            session.call(
                "trigger_dag_run",
                f"{dag_id}/{run_id}",
                lambda: DagRunApi(session.client).trigger_dag_run_with_http_info(
                    dag_id, body, _request_timeout=session.timeout
                ),
                writes=True,
            )
        except PermanentError as exc:
            if isinstance(exc.__cause__, ConflictException):
                return False
            raise
        return True

    # -- access ---------------------------------------------------------------------------------

    @property
    def api_client(self) -> ApiClient:
        """The authenticated client (token fresh now), for calls the port does not cover."""
        self.session.ensure_token()
        return self.session.client

    @property
    def access_token(self) -> str | None:
        return self.session.access_token

    @access_token.setter
    def access_token(self, token: str) -> None:
        """Use this token until it expires or Airflow refuses it (a token minted elsewhere)."""
        self.session.access_token = token

    def check(self) -> None:
        """One authorized read (an asset page of one): whether this identity may use the API."""
        from airflow_client.client import AssetApi

        session = self.session
        session.call(
            "get_assets",
            "(access check)",
            lambda: AssetApi(session.client).get_assets_with_http_info(
                limit=1, _request_timeout=session.timeout
            ),
        )
